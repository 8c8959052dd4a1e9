"""Class probabilities with test-time augmentation (TTA), each view computed on the accelerator.

A view is a flip or quarter turn of the whole image (`VIEWS`; flowers have no handedness and,
seen from above, no up). All requested views share one compiled program: a Keras model that
takes the uint8 images and a per-image view number (0 = the original) and transforms them with
`keras.ops` before the classifier. The dataset is read once; each batch is predicted in every
view, so adding a view costs one forward pass per batch and no further compilation or decoding.
"""

import math

import keras
import numpy as np
from keras import ops

from petals import hosts, out_of_memory


def _transpose(images):
    """Swap the rows and columns of every image [batch, height, width, channels]."""
    return ops.transpose(images, (0, 2, 1, 3))


# Views of a batch [batch, height, width, channels], named as in TTA_VIEWS; each matches numpy
# on one image: np.fliplr, np.flipud, np.rot90(k=1) (a counter-clockwise quarter turn) and
# np.rot90(k=3) (clockwise). The quarter turns need square images, as the pipeline makes them.
VIEWS = {
    "flip_lr": lambda images: ops.flip(images, axis=2),
    "flip_ud": lambda images: ops.flip(images, axis=1),
    "rot90": lambda images: ops.flip(_transpose(images), axis=1),
    "rot270": lambda images: ops.flip(_transpose(images), axis=2),
}


class NonFinitePredictions(ValueError):
    """A model predicted NaN or infinite probabilities (its weights or its normalisation
    statistics broke, although its training loss stayed finite): its predictions are unusable."""


def _finite(probabilities):
    """`probabilities`, unless a row holds NaN or infinity: then NonFinitePredictions naming
    how many images."""
    broken = int(np.count_nonzero(~np.isfinite(probabilities).all(axis=-1)))
    if broken:
        raise NonFinitePredictions(
            f"non-finite predictions for {broken} of {len(probabilities)} images"
        )
    return probabilities


def validate_views(views):
    """Raise ValueError unless `views` names each of VIEWS at most once."""
    unknown = [view for view in views if view not in VIEWS]
    if unknown or len(set(views)) != len(views):
        raise ValueError(
            f"TTA_VIEWS = {list(views)!r} is not valid: expected each of "
            f"{', '.join(VIEWS)} at most once"
        )


class SelectView(keras.layers.Layer):
    """Images [batch, S, S, C] and view numbers [batch] → each image in its view.

    View 0 is the image itself, view i the i-th of `views`. Every requested view of the batch is
    computed (cheap moves of uint8 pixels) and the selection is elementwise, so one program
    serves every view.
    """

    def __init__(self, views, **kwargs):
        super().__init__(autocast=False, **kwargs)
        validate_views(views)
        self.views = tuple(views)

    def call(self, images, view):
        selected = images
        for number, name in enumerate(self.views, start=1):
            chosen = ops.reshape(ops.equal(ops.cast(view, "int32"), number), (-1, 1, 1, 1))
            selected = ops.where(chosen, VIEWS[name](images), selected)
        return selected

    def compute_output_shape(self, images_shape, view_shape):
        return images_shape

    def get_config(self):
        return {**super().get_config(), "views": list(self.views)}


class Replicated(keras.layers.Layer):
    """Its input laid out whole on every device, so that every process can read it.

    Under a distribution across processes (petals.hosts) a model's output is split across every
    process's devices, and Keras's predict cannot fetch it ("Fetching value for jax.Array that
    spans non-addressable devices"). Laid out replicated, it is gathered on the accelerators
    (one all-gather of the probabilities per batch) and each process holds all of it.
    """

    def call(self, inputs):
        layout = keras.distribution.TensorLayout(
            [None] * len(inputs.shape), keras.distribution.distribution().device_mesh
        )
        return keras.distribution.distribute_tensor(inputs, layout)

    def compute_output_shape(self, input_shape):
        return input_shape


def _image_spec(dataset):
    """The images' TensorSpec of a dataset of images or (images, labels) batches."""
    spec = dataset.element_spec
    return spec[0] if isinstance(spec, tuple) else spec


def views_model(model, image_shape, image_dtype, views):
    """A model of {"image", "view"} → `model`'s probabilities on each image's view.

    Built once per model, image shape and views, and kept on the model (so it lives and dies
    with it): Keras compiles its predict step once per model, not once per call. With several
    processes its output is `Replicated`, so that every process can read it.
    """
    # In the model's __dict__: assigned as an attribute, Keras would track it as a sublayer.
    # vars() reaches the model through petals.train.members' weak proxies too.
    built = vars(model).setdefault("_petals_views_models", {})
    key = (tuple(image_shape), image_dtype, tuple(views))
    if key not in built:
        images = keras.Input(shape=image_shape, dtype=image_dtype, name="image")
        view = keras.Input(shape=(), dtype="int32", name="view")
        probabilities = model(SelectView(views)(images, view), training=False)
        if hosts.current().count > 1:
            probabilities = Replicated()(probabilities)
        built[key] = keras.Model(
            {"image": images, "view": view}, probabilities, name=f"{model.name}_tta"
        )
    return built[key]


def _batches_in_every_view(dataset, steps, view_count):
    """Each batch's images, read and decoded once, fed `view_count` times with its view number."""
    for element in dataset.take(steps).as_numpy_iterator():
        images = element[0] if isinstance(element, tuple) else element
        for number in range(view_count):
            # A one-element tuple: Keras takes a generator's tuples as (inputs, ...).
            yield ({"image": images, "view": np.full(len(images), number, "int32")},)


def predict(model, dataset, count, views=()):
    """Class probabilities [count, classes] of the first `count` images, float32, on the host.

    `dataset` yields full batches of uint8 images, or of (images, labels), with a static batch
    size (as petals.data.evaluation_dataset(..., count=N) and test_dataset do: the last batch
    is padded); the padding is predicted and dropped. With `views` the probabilities are the
    mean over the original and each view. An out-of-memory error becomes one line;
    NonFinitePredictions says that some are NaN or infinite.
    With several processes (petals.hosts) `dataset` yields this process's share of the records
    and of every batch (as petals.data's datasets do), and every process returns the
    probabilities of all `count` images, in record order.
    """
    validate_views(views)
    spec = _image_spec(dataset)
    batch = spec.shape[0]
    if batch is None:
        raise ValueError("predict needs batches of a fixed size (batch with drop_remainder=True)")
    # Keras cannot know a TFRecord dataset's length; without the step count it reads the
    # dataset dry and warns that the input ran out of data.
    process = hosts.current()
    if process.count > 1:  # Before anything is gathered: the record order depends on it.
        mesh = keras.distribution.distribution().device_mesh
        hosts.check_device_order(np.ravel(mesh.devices), process.count)
    steps = math.ceil(count / (batch * process.count))
    with out_of_memory.hint(f"predicting with {model.name}"):
        if not views and process.count == 1:
            return _finite(model.predict(dataset, steps=steps, verbose=0)[:count])
        tta = views_model(model, spec.shape[1:], spec.dtype.name, views)
        # Decoding JPEGs on the host is the slow part, so each batch is read once and fed once
        # per view. Keras's own predict loop splits every batch across the devices (under
        # DataParallel; predict_on_batch would give each device the whole batch).
        view_count = len(views) + 1
        probabilities = tta.predict(
            _batches_in_every_view(dataset, steps, view_count), steps=steps * view_count, verbose=0
        )
    # [batch 0 view 0, batch 0 view 1, …, batch 1 view 0, …] → the mean over the views. Each
    # global batch holds every process's share of it: put back in record order.
    by_view = probabilities.reshape(-1, view_count, batch * process.count, probabilities.shape[-1])
    by_batch = by_view.mean(axis=1).reshape(-1, probabilities.shape[-1])
    return _finite(hosts.in_record_order(by_batch, count, process.count, batch).astype(np.float32))
