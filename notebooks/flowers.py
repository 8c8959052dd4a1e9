# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Petals to the Metal: 104 flowers on TPU, GPU or CPU
#
# Fine-tunes one or several pretrained backbones on the competition's TFRecords, blends them for
# the best validation macro F1, and writes `submission.csv`. The same notebook runs on Kaggle's
# TPU v5e-8 (Keras 3 on JAX), a GPU, or a laptop CPU; the code it narrates lives in `petals/`.

# %% tags=["parameters"]
IMAGE_SIZE = 512  # 192, 224, 331 or 512 on the competition data
BACKBONES = ["efficientnet_b7"]  # one name trains one model; several train an ensemble
WEIGHTS = "imagenet"  # "imagenet", "noisy-student" (EfficientNets), None, or a weights file
EPOCHS = 12
BATCH_SIZE_PER_REPLICA = 16
LR_START = 1e-5
LR_MAX = 5e-5  # per replica: multiplied by the replica count
LR_MIN = 1e-5
LR_RAMP_UP_EPOCHS = 5
LR_SUSTAIN_EPOCHS = 0
LR_DECAY = 0.8
ROTATION_DEGREES = 15.0  # standard deviations of the random affine augmentation
SHEAR_DEGREES = 5.0
ZOOM_STDDEV = 0.1
SHIFT_PIXELS = 16.0
FLIP = True
TRAIN_ON_VALIDATION = False  # merge val into train (no validation scores then)
EXTRA_DATA = []  # folders or Kaggle dataset slugs of extra training records (competition schema)
EXCLUDED_IDS = []  # record ids to drop from train and val
LABEL_SMOOTHING = 0.0  # 0 ≤ x < 1: share of each target spread over the other classes
HEAD_DROPOUT = 0.0  # dropout rate before the classification head
MIXUP = 0.0  # probability that an image is blended with another (soft targets)
CUTMIX = 0.0  # probability that an image gets a patch of another (soft targets)
TTA_VIEWS = ["flip_lr"]  # views averaged with the original: flip_lr, flip_ud, rot90, rot270
BLEND_STEP = 0.05  # grid step of the ensemble-weight search
SEED = 42
DATA_DIR = None  # None: find the competition data on Kaggle
OUTPUT_DIR = "."
MAX_STEPS_PER_EPOCH = None  # a small cap for smoke runs
KERAS_BACKEND = None  # "jax", "tensorflow", or None (the environment's, else JAX)
ACCELERATOR = None  # "tpu" or "gpu" to fail instead of training on a CPU by mistake
COMPILE_CACHE_DIR = None  # JAX: keep compiled programs here (an attached folder saves minutes)
CLASS_NAMES = None  # None: the competition's 104 flower names

# %% [markdown]
# ## Configuration
# Every parameter is checked here, so a typo fails in a second rather than after an hour of
# training. The kernel starts in this notebook's folder (Jupyter, papermill) or in the repository
# root; the `petals` package sits next to one of them.

# %%
import os
import pathlib
import sys
import time

started = time.perf_counter()
for folder in (pathlib.Path.cwd(), pathlib.Path.cwd().parent):
    if (folder / "petals" / "__init__.py").is_file():
        sys.path.insert(0, str(folder))
        break

from petals import CLASSES, accelerator, parameters, submission

KERAS_BACKEND = accelerator.choose_backend(KERAS_BACKEND)  # before Keras is first imported
PARAMETERS = parameters.validate({name: globals()[name] for name in parameters.NAMES})
CLASS_NAMES = CLASS_NAMES or CLASSES
OUTPUT_DIR = submission.prepare_output_dir(OUTPUT_DIR)

# %% [markdown]
# ## Imports

# %%
import keras
import numpy as np
from IPython.display import display

from petals import augment, backbones, data, ensemble, evaluate, figures, schedule, train

keras.utils.set_random_seed(SEED)
timings = {"import": time.perf_counter() - started}
print(f"Keras {keras.__version__} on {keras.backend.backend()}")

# %% [markdown]
# ## Accelerator
# Data parallel on every chip found; the global batch grows with the replica count so each chip
# keeps its own batch size. With JAX, compiled programs can be kept on disk for the next run.

# %%
if KERAS_BACKEND == "jax":
    accelerator.enable_compilation_cache(COMPILE_CACHE_DIR)
device = accelerator.detect(require=ACCELERATOR)
GLOBAL_BATCH = BATCH_SIZE_PER_REPLICA * device.replicas
print(device.describe(), f"— global batch {GLOBAL_BATCH}")

# %% [markdown]
# ## Data
# Records are counted from the shard names, their framing is checked (a truncated shard is named
# here, not deep inside training), and the training stream shuffles serialized records and
# decodes to uint8.

# %%
started = time.perf_counter()
root = data.find_data_root(DATA_DIR)
splits = {name: data.find_split(root, IMAGE_SIZE, name) for name in data.SPLITS}
for split in splits.values():
    data.check_split(split)
training_files = splits["train"].files + (splits["val"].files if TRAIN_ON_VALIDATION else ())
training_records = data.count_records(training_files)
steps = train.steps_per_epoch(training_records, GLOBAL_BATCH, MAX_STEPS_PER_EPOCH)
training_data = data.training_dataset(training_files, IMAGE_SIZE, GLOBAL_BATCH, EXCLUDED_IDS,
                                      seed=SEED)
validation_data = None if TRAIN_ON_VALIDATION else data.evaluation_dataset(
    splits["val"].files, IMAGE_SIZE, GLOBAL_BATCH, EXCLUDED_IDS)
# Labels and ids are read now (no decoding), so a broken split fails before training.
validation_labels = None if TRAIN_ON_VALIDATION else data.labels(splits["val"].files,
                                                                  EXCLUDED_IDS)
test_ids = data.record_ids(splits["test"].files)
submission.check_ids(test_ids)
print(f"data: {root}")
for split in splits.values():
    print(f"  {split.name:5} {split.count:6} images in {len(split.files)} files")
print(f"training on {training_records} images, {steps} steps of {GLOBAL_BATCH} per epoch")

# %%
images, labels = (np.asarray(tensor) for tensor in next(iter(training_data)))
timings["data"] = time.perf_counter() - started
display(figures.save(figures.batch(images, labels, CLASS_NAMES), OUTPUT_DIR, "training_batch"))

# %% [markdown]
# ## Augmentation
# A random rotation, shear, zoom and shift per image, plus a mirror flip: a Keras layer inside the
# model, so it runs in the compiled step on the accelerator, not on the host CPU that feeds it.
# Below: the same batch as the model sees it during training.


# %%
def make_augmentation():
    return augment.RandomAffine(ROTATION_DEGREES, SHEAR_DEGREES, ZOOM_STDDEV, SHIFT_PIXELS, FLIP,
                                seed=SEED)


augmented = make_augmentation()(keras.ops.cast(images, "float32"), training=True)
augmented = np.clip(keras.ops.convert_to_numpy(augmented), 0, 255).astype(np.uint8)
display(figures.save(figures.batch(augmented, labels, CLASS_NAMES), OUTPUT_DIR, "augmented_batch"))

# %% [markdown]
# ## Learning-rate schedule

# %%
learning_rate = schedule.Schedule(LR_START, LR_MAX * device.replicas, LR_MIN, LR_RAMP_UP_EPOCHS,
                                  LR_SUSTAIN_EPOCHS, LR_DECAY)
display(figures.save(figures.schedule(learning_rate.values(EPOCHS)), OUTPUT_DIR, "schedule"))

# %% [markdown]
# ## Model
# Each backbone gets the input scaling its weights were trained with, and a float32 softmax head
# (under bfloat16 mixed precision the probabilities and the loss stay in float32). Built inside
# the accelerator's scope so the variables are placed on every replica.

# %%
started = time.perf_counter()
with device.scope():
    models = {name: train.compile_model(backbones.build_model(
        name, IMAGE_SIZE, weights=WEIGHTS, augmentation=make_augmentation()))
        for name in BACKBONES}
timings["build"] = time.perf_counter() - started
for name, model in models.items():
    print(f"{name}: {model.count_params():,} parameters")
models[BACKBONES[0]].summary(line_length=100, expand_nested=False)

# %% [markdown]
# ## Training
# One model after another; the first epoch includes the compilation of the training step.

# %%
started = time.perf_counter()
histories, epoch_seconds = {}, {}
for name, model in models.items():
    print(f"--- {name}")
    histories[name], epoch_seconds[name] = train.fit(model, training_data, EPOCHS, steps,
                                                     learning_rate, validation=validation_data)
    display(figures.save(figures.training_curves(histories[name]), OUTPUT_DIR,
                         f"training_{name}"))
training_seconds = time.perf_counter() - started
# The first epoch pays for compiling the training step; split that out so a slow stage shows.
timings["compile"] = sum(train.compile_seconds(seconds) for seconds in epoch_seconds.values())
timings["train"] = training_seconds - timings["compile"]

# %% [markdown]
# ## Evaluation
# Macro F1 (the competition's metric) on the validation split, per model, with flip TTA when
# asked. Skipped when validation was merged into training.

# %%
started = time.perf_counter()


def predict(model, make_dataset, count):
    """Class probabilities of the first `count` images (the batches are padded to full ones);
    with TTA, averaged with those of the mirror images."""
    probabilities = model.predict(make_dataset(flip=False), verbose=0)[:count]
    if TTA_VIEWS:
        flipped = model.predict(make_dataset(flip=True), verbose=0)[:count]
        probabilities = ensemble.flip_tta(probabilities, flipped)
    return probabilities


model_scores, validation_probabilities = {}, {}
if not TRAIN_ON_VALIDATION:
    for name, model in models.items():
        validation_probabilities[name] = predict(model, lambda flip: data.evaluation_dataset(
            splits["val"].files, IMAGE_SIZE, GLOBAL_BATCH, EXCLUDED_IDS, flip=flip,
            count=len(validation_labels)), len(validation_labels))
        model_scores[name] = evaluate.scores(validation_labels,
                                             validation_probabilities[name].argmax(axis=-1))
        print(f"{name}: " + "  ".join(f"{key} {value:.4f}"
                                      for key, value in model_scores[name].items()))
timings["evaluate"] = time.perf_counter() - started

# %% [markdown]
# ## Ensemble
# Blend weights searched on a grid over the simplex for the best validation F1 (equal weights
# without validation). One backbone is a blend of one.

# %%
if validation_labels is None:
    blend_weights, blend_f1 = ensemble.equal_weights(len(models)), None
else:
    blend_weights, blend_f1 = ensemble.best_weights(
        [validation_probabilities[name] for name in models], validation_labels, BLEND_STEP)
print("blend weights:", dict(zip(models, np.round(blend_weights, 3), strict=True)))
if validation_labels is not None:
    blended = ensemble.blend([validation_probabilities[name] for name in models], blend_weights)
    validation_predictions = blended.argmax(axis=-1)
    blend_scores = evaluate.scores(validation_labels, validation_predictions)
    print(f"blend: F1 {blend_f1:.4f} (best single model "
          f"{max(score['f1'] for score in model_scores.values()):.4f})")
    matrix, present = evaluate.confusion(validation_labels, validation_predictions)
    display(figures.save(figures.confusion(matrix, present, CLASS_NAMES, blend_scores),
                         OUTPUT_DIR, "confusion_matrix"))

# %% [markdown]
# ## Predictions and submission
# Test images are read in file order, so predictions line up with the ids. The file is validated
# (every test id once, labels 0–103) and written atomically: a failed run leaves no partial file.

# %%
started = time.perf_counter()
test_probabilities = ensemble.blend([predict(model, lambda flip: data.test_dataset(
    splits["test"].files, IMAGE_SIZE, GLOBAL_BATCH, len(test_ids), flip=flip), len(test_ids))
    for model in models.values()], blend_weights)
test_predictions = test_probabilities.argmax(axis=-1)
timings["predict"] = time.perf_counter() - started
submission.write_submission(os.path.join(OUTPUT_DIR, "submission.csv"), test_ids,
                            test_predictions)
metrics = {
    "parameters": PARAMETERS,
    "accelerator": {"kind": device.kind, "backend": device.backend, "replicas": device.replicas},
    "keras_version": keras.__version__,
    "history": histories,
    "epoch_seconds": epoch_seconds,
    "seconds_per_epoch": {name: train.steady_epoch_seconds(seconds)
                          for name, seconds in epoch_seconds.items()},
    "images_per_second": {name: train.images_per_second(seconds, steps, GLOBAL_BATCH)
                          for name, seconds in epoch_seconds.items()},
    "validation": model_scores,
    "blend_weights": dict(zip(models, blend_weights, strict=True)),
    "blend_f1": blend_f1,
    "stage_seconds": timings,
    "validation_images": None if validation_labels is None else len(validation_labels),
    "test_images": len(test_ids),
}
submission.write_metrics(os.path.join(OUTPUT_DIR, "metrics.json"), metrics)
print("seconds per stage: " + ", ".join(f"{stage} {seconds:.1f}"
                                        for stage, seconds in timings.items()))
print(f"wrote {len(test_ids)} predictions to {os.path.join(OUTPUT_DIR, 'submission.csv')}")

# %% [markdown]
# ## Visual validation
# Validation images with the blend's prediction: OK, or NO → the true class.

# %%
if validation_labels is not None:
    shown = data.evaluation_dataset(splits["val"].files, IMAGE_SIZE, 18, EXCLUDED_IDS,
                                    count=len(validation_labels))
    images, labels = (np.asarray(tensor)[:len(validation_labels)] for tensor in next(iter(shown)))
    display(figures.save(figures.predictions(images, labels, validation_predictions[:len(images)],
                                             CLASS_NAMES), OUTPUT_DIR, "validation_predictions"))
summary = f"F1 {blend_f1:.4f}" if blend_f1 is not None else "no validation (trained on val)"
print(f"DONE {'+'.join(BACKBONES)} {IMAGE_SIZE}px {EPOCHS} epochs on {device.describe()}: "
      f"{summary}, {len(test_ids)} test predictions")
