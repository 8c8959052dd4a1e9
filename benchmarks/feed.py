"""Feed the accelerator ahead: the next batches' host-to-device transfer runs during the step.

Keras 3.15's JAX trainer starts a batch's transfer one step ahead only without a distribution.
Under `keras.distribution.DataParallel` (the kit on a TPU v5e-8) it converts and shards each
batch on the Python main thread right before the step that uses it. `device_prefetch` shards
the batches itself, `depth` batches ahead, with the layout Keras would give them, so `model.fit`
receives arrays already on the devices and its own placement of them is a no-op.

Not wired into `petals.train.fit`: it lives here, with the benchmarks that measure it, until
`accelerator_check.sh` shows a gain on a GPU or TPU. On CPU virtual devices a transfer is a
memory copy on the same cores as the step, so there it cannot show one (README.md here).
"""

import collections
import itertools


def device_prefetch(batches, distribution=None, depth=1):
    """Yield the batches of `batches` placed on the device(s), `depth` batches in flight ahead.

    Each batch is a tuple (or any nesting) of numpy arrays, such as `(images, labels)` from
    `tf_dataset.as_numpy_iterator()`; None entries stay None. With a
    `keras.distribution.Distribution` every array is split along its batch dimension exactly
    as `model.fit` would split it (`distribution.get_data_layout`); without one it goes to the
    default device. The transfers are asynchronous: placing a batch only enqueues its copy, so
    while the step on the current batch runs, the next `depth` batches are already on their way.
    """
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a whole number of batches, at least 1, not {depth!r}")
    import jax

    layouts = {}

    def place(array):
        if distribution is None:
            return jax.device_put(array)
        shape = tuple(array.shape)
        if shape not in layouts:
            layouts[shape] = distribution.get_data_layout(shape).backend_layout
        # What Keras calls for each array under a distribution; on one host a sharded device_put.
        return jax.make_array_from_process_local_data(layouts[shape], array)

    iterator = iter(batches)
    in_flight = collections.deque(
        jax.tree_util.tree_map(place, batch) for batch in itertools.islice(iterator, depth)
    )
    for batch in iterator:
        # Enqueue the next transfer before handing out the current batch, so it overlaps the step.
        in_flight.append(jax.tree_util.tree_map(place, batch))
        yield in_flight.popleft()
    yield from in_flight
