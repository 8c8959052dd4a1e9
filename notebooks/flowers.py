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
# This notebook fine-tunes one or several ImageNet backbones on the competition's TFRecords,
# blends them, and writes `submission.csv` for Kaggle's "Petals to the Metal" (104 classes,
# scored by macro F1). The same cells run on Kaggle's TPU v5e-8 (Keras 3 on JAX, eight chips
# data-parallel), on a GPU, and on a laptop CPU with the tiny demo dataset.
#
# How long it takes, and where each figure was measured: on **one H200 GPU** (not a TPU),
# EfficientNetB7 at 512 px compiles its train step in about four minutes and then trains at
# about 240 images/s, under a minute per epoch of the 12,753 training images. A TPU v5e-8 has not
# been timed with this notebook yet; its `metrics.json` records the seconds of every stage. On a
# laptop CPU the demo (digits standing in for flowers, a small CNN) takes about a minute. Every
# stage shows its result right after it runs, and the run ends with one `DONE` line.
#
# **On Kaggle:** in the notebook's settings (the panel on the right) set *Accelerator* to
# **TPU v5e-8** and turn **Internet on** (the ImageNet weights are downloaded when the model is
# built). The competition's data is attached already and found by itself.
#
# Everything you may want to change is in the next cell: the recipe first, then where the run
# reads and writes. The plumbing (reading shards, building backbones, writing files atomically)
# lives in the small tested package `petals/`; the cells below show the parts of the recipe that
# matter for the score.

# %% tags=["parameters"]
IMAGE_SIZE = 512  # 192, 224, 331 or 512 on the competition data
BACKBONES = ["efficientnet_b7"]  # one name trains one model; several train an ensemble
WEIGHTS = "imagenet"  # "imagenet", "noisy-student" (EfficientNets), None, a file, or per backbone:
# {"efficientnet_b7": "noisy-student", "densenet201": "imagenet"}
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
LABEL_SMOOTHING = 0.0  # 0 ≤ x < 1: share of each target spread evenly over all classes
HEAD_DROPOUT = 0.0  # dropout rate before the classification head
MIXUP = 0.0  # probability that an image is blended with another (soft targets)
CUTMIX = 0.0  # probability that an image gets a patch of another (soft targets)
TTA_VIEWS = ["flip_lr"]  # views averaged with the original: flip_lr, flip_ud, rot90, rot270
BLEND_STEP = 0.05  # grid step of the ensemble-weight search
SEED = 42
# Where the run reads and writes, and on what: not the recipe. Kaggle needs none of them changed.
DATA_DIR = None  # None: find the competition data on Kaggle
OUTPUT_DIR = "."
MAX_STEPS_PER_EPOCH = None  # a small cap for smoke runs
KERAS_BACKEND = None  # "jax", "tensorflow", or None (the environment's, else JAX)
ACCELERATOR = None  # "tpu" or "gpu" to fail instead of training on a CPU by mistake
COMPILE_CACHE_DIR = None  # JAX: keep compiled programs here, for the next run of this image
COMPILE_CACHE_FROM = None  # a cache to start from: a folder, or your own attached cache dataset
CLASS_NAMES = None  # None: the dataset's names (the competition's 104 flowers)

# %% [markdown]
# ## Accelerator
#
# Keras 3 runs on several backends, and the backend is chosen once, before Keras is first
# imported. On Kaggle's TPU v5e-8 that must be JAX: the image has `jax[tpu]` but no TPU build
# of TensorFlow, so TensorFlow only reads the TFRecords here. `accelerator.detect` then finds
# the chips and sets up data parallelism: every chip holds a copy of the model, each step's
# batch is split evenly across them, and the gradients are averaged. On a TPU the layers compute
# in bfloat16 (twice the throughput, half the memory) while the variables stay float32.
#
# On a Cloud TPU slice of several hosts (one process per host) the same cell first joins the
# other hosts' processes, and the chips of every host then share each batch; only process 0
# prints and writes files (docs/hosts.md in the kit's repository).
#
# Compiling the train step of a large backbone takes minutes. The image this run is on (Kaggle
# rebuilds its image now and then, with new versions) is recorded with a short fingerprint, and
# on JAX the compiled programs are kept in `COMPILE_CACHE_DIR`: a later run on the same image
# loads them instead of compiling (`COMPILE_CACHE_FROM`: a cache of an earlier run, used only
# when its fingerprint is this image's). `metrics.json` records how many programs came from it.

# %%
import os

from petals import accelerator, compile_cache, image, install, report, versions

timer = report.StageTimer()
with timer.stage("import"):
    KERAS_BACKEND = accelerator.choose_backend(KERAS_BACKEND)  # before Keras is imported
    import keras
    import numpy as np
    from IPython.display import display

    from petals import (
        CLASSES,
        augment,
        backbones,
        data,
        evaluate,
        figures,
        hosts,
        mixing,
        output_folder,
        parameters,
        predict,
        probabilities,
        schedule,
        submission,
        train,
    )

install.check_keras_version()
# First to touch the devices: on a TPU slice of several hosts it joins the other hosts' processes.
device = accelerator.detect(require=ACCELERATOR)
VERSIONS = versions.installed()
IMAGE = image.of_device(device)
print(", ".join(f"{name} {version}" for name, version in VERSIONS.items() if version))
print(device.describe())
print(image.line(IMAGE))
# After the processes have joined (JAX then knows which one writes), before the first compile.
compile_counter = (compile_cache.start(COMPILE_CACHE_DIR, IMAGE, COMPILE_CACHE_FROM)
                   if KERAS_BACKEND == "jax" else None)

# %% [markdown]
# ## Configuration
#
# Every parameter is checked here, so a typo fails with one line naming the parameter, the bad
# value and the values it accepts, rather than after an hour of training (`kit.runner` and
# `build.py` run the same checks before they start the notebook at all). Two values are
# derived from the hardware. The global batch is the per-chip batch times the number of chips,
# so each chip keeps the batch it handles well. The peak learning rate grows with it: averaged
# over eight times as many images, each gradient is less noisy and can take a larger step.

# %%
PARAMETERS = parameters.validate_notebook(globals())  # also sets the checked values back
OUTPUT_DIR = output_folder.prepare(OUTPUT_DIR)
keras.utils.set_random_seed(SEED)
GLOBAL_BATCH = BATCH_SIZE_PER_REPLICA * device.replicas
PEAK_LEARNING_RATE = LR_MAX * device.replicas
print(f"global batch {GLOBAL_BATCH} ({BATCH_SIZE_PER_REPLICA} per replica × {device.replicas})"
      f", peak learning rate {PEAK_LEARNING_RATE:g}")

# %% [markdown]
# ## Data
#
# The competition ships each split as TFRecord shards of JPEGs, at four image sizes. A shard's
# name carries its record count (`00-512x512-230.tfrec`), so steps per epoch are known without
# reading the data, and each shard's framing is walked once here so that a truncated download
# is named now instead of failing deep inside training.
#
# Images stay **uint8 until they reach the accelerator**. A 512 px image is 786 KB as uint8 and
# four times that as float32; the host CPU that decodes JPEGs is the slowest part of a TPU
# machine, and every byte it moves to the chips is a byte the chips wait for. The model casts to
# floating point as its first operation, on the accelerator. The training stream shuffles the
# small serialized records (not decoded images), so a deep shuffle costs megabytes.

# %%
with timer.stage("data"):
    root = data.find_data_root(DATA_DIR)
    splits = {name: data.find_split(root, IMAGE_SIZE, name) for name in data.SPLITS}
    for split in splits.values():
        data.check_split(split)
        print(f"{split.name:5} {split.count:6} images in {len(split.files)} shards")
    # A dataset may name its classes (the demo's digits do); the competition's are the flowers.
    CLASS_NAMES = CLASS_NAMES or data.class_names(root, IMAGE_SIZE) or CLASSES

# %% [markdown]
# ### Extra training data, kept apart from validation and test
#
# The top entries added public flower photos converted to the competition's schema (`EXTRA_DATA`:
# folders, or Kaggle datasets attached to the kernel). They join **training only**. Some public
# sets overlap the competition's own images, so a leakage guard drops every extra record whose
# id, or whose JPEG bytes, equal a validation or test record's: training on a validation image
# would inflate the validation score, and the blend weights tuned on it, without helping the
# leaderboard.

# %%
with timer.stage("data"):
    training = data.training_data(splits, IMAGE_SIZE, TRAIN_ON_VALIDATION, EXTRA_DATA,
                                  EXCLUDED_IDS)
    steps = train.steps_per_epoch(training.count, GLOBAL_BATCH, MAX_STEPS_PER_EPOCH)
    training_data = data.training_dataset(training, IMAGE_SIZE, GLOBAL_BATCH, seed=SEED)
    if TRAIN_ON_VALIDATION:
        validation_labels = validation_ids = None
    else:
        validation_labels, validation_ids = data.labels_and_ids(splits["val"].files,
                                                                EXCLUDED_IDS)
    test_ids = data.record_ids(splits["test"].files)
    submission.check_ids(test_ids)
print("\n".join(training.lines()))
print(f"training on {training.count} images: {steps} steps of {GLOBAL_BATCH} per epoch")

# %% [markdown]
# ### How many images each class has
#
# The classes are far from balanced: a few hundred roses, a dozen of some orchids. Macro F1 (see
# Evaluation) weighs every class equally, so the rare classes at the bottom of this chart count
# as much as the roses at the top. Counted on the competition's training split.

# %%
training_labels = data.labels(splits["train"].files, EXCLUDED_IDS)
display(figures.save(figures.class_histogram(training_labels, CLASS_NAMES), OUTPUT_DIR,
                     "class_histogram"))

# %% [markdown]
# One training batch, exactly as the accelerator receives it: uint8 pixels and integer labels.

# %%
images, labels = (np.asarray(tensor) for tensor in next(iter(training_data)))
print(f"batch: images {images.shape} {images.dtype}, labels {labels.shape} {labels.dtype}")
display(figures.save(figures.batch(images, labels, CLASS_NAMES), OUTPUT_DIR, "training_batch"))

# %% [markdown]
# And what the model is scored on and predicts for the submission: validation images with their
# class, test images with only their id (their labels are Kaggle's secret), both read in order
# and never augmented.

# %%
sample_images, sample_labels = (np.asarray(tensor) for tensor in next(iter(
    data.evaluation_dataset(splits["val"].files, IMAGE_SIZE, 6, EXCLUDED_IDS,
                            process=hosts.SINGLE))))  # every process reads the same six
sample_test = np.asarray(next(iter(data.test_dataset(splits["test"].files, IMAGE_SIZE, 6,
                                                     len(test_ids), process=hosts.SINGLE))))
display(figures.save(figures.samples(sample_images, sample_labels, sample_test, test_ids,
                                     CLASS_NAMES), OUTPUT_DIR, "validation_and_test_images"))

# %% [markdown]
# ## Model
#
# ### Augmentation inside the compiled step
#
# Each training image is rotated, sheared, zoomed and shifted by a random amount, and mirrored
# half the time. This runs as the model's first layer, so it is part of the compiled train step
# on the accelerator: the host only decodes JPEGs, and the augmentation costs the chips next to
# nothing (measured in `benchmarks/train_step.py`). Done on the host, per image, it was what kept
# 2020's TPUs waiting.
#
# The geometry is one 3×3 matrix per image. Pixel coordinates are measured from the centre as
# `[up, right, 1]`, and the matrix maps each *output* pixel to the *input* pixel it copies, so
# every output pixel gets exactly one value and there are no holes:
#
# ```
# M = R(r) · S(s) · Z(z_h, z_w) · T(t_h, t_w)
#
#        ⎛  cos r   sin r   0 ⎞           ⎛ 1   sin s   0 ⎞
#   R =  ⎜ −sin r   cos r   0 ⎟      S =  ⎜ 0   cos s   0 ⎟
#        ⎝    0       0     1 ⎠           ⎝ 0     0     1 ⎠
#
#        ⎛ 1/z_h    0     0 ⎞             ⎛ 1   0   t_h ⎞
#   Z =  ⎜   0    1/z_w   0 ⎟         T = ⎜ 0   1   t_w ⎟
#        ⎝   0      0     1 ⎠             ⎝ 0   0    1  ⎠
# ```
#
# with `r ~ N(0, ROTATION_DEGREES)`, `s ~ N(0, SHEAR_DEGREES)`, `z ~ 1 + N(0, ZOOM_STDDEV)` and
# `t ~ N(0, SHIFT_PIXELS)`. A mirror flip negates the `right` column of `M`, so it rides along in
# the same single gather. Source locations are rounded to the nearest pixel (real pixel values,
# no blur) and clamped to the image (edges repeat rather than leaving black corners).
# Below: one training image under several draws.

# %%
augmentation = augment.RandomAffine(ROTATION_DEGREES, SHEAR_DEGREES, ZOOM_STDDEV, SHIFT_PIXELS,
                                    FLIP, seed=SEED)
display(figures.save(figures.augmentation(images[0], augmentation), OUTPUT_DIR, "augmentation"))

# %% [markdown]
# ### Soft targets: label smoothing, MixUp and CutMix
#
# With `LABEL_SMOOTHING = 0.1` over 104 classes, Keras spreads the 0.1 evenly over **all**
# classes, the true one included: the target of a daisy is 0.9 + 0.1/104 ≈ 0.901 on "daisy" and
# 0.1/104 ≈ 0.001 on each other class. The model is never pushed towards infinite confidence,
# which helps when some labels are wrong or two classes look alike. MixUp blends two images and
# their targets in proportion; CutMix pastes a patch of one image into another and mixes the
# targets by area. Both happen inside the compiled step, like the affine augmentation, with
# probabilities `MIXUP` and `CUTMIX` per image. When all three are 0 the labels stay integers
# and the loss is the plain sparse cross-entropy (the fast path).

# %%
if MIXUP or CUTMIX:
    pixel_weights = mixing.pixel_weights(images, MIXUP, CUTMIX, keras.random.SeedGenerator(SEED))
    mixed = keras.ops.convert_to_numpy(mixing.mix_images(images, pixel_weights))
    own = keras.ops.convert_to_numpy(mixing.own_shares(pixel_weights))
    titles = [f"{share:.0%} {figures.class_name(int(label), CLASS_NAMES)}\n"
              f"{1 - share:.0%} {figures.class_name(int(partner), CLASS_NAMES)}"
              for share, label, partner in zip(own, labels, np.roll(labels, 1), strict=True)]
    display(figures.save(figures.image_grid(mixed[:12], titles[:12], title="MixUp / CutMix: "
                                            "each image's own share of the target"),
                         OUTPUT_DIR, "mixed_batch"))

# %% [markdown]
# ### Learning-rate schedule
#
# The backbones arrive pretrained and the new head starts random. A large learning rate at once
# would push the head's random gradients back through the backbone and wreck features learnt on
# millions of images, and with a global batch of 128 the peak rate is eight times a single
# chip's. So the rate ramps up linearly over `LR_RAMP_UP_EPOCHS`, holds, then decays
# exponentially towards `LR_MIN` as the model settles.

# %%
learning_rate = schedule.Schedule(LR_START, PEAK_LEARNING_RATE, LR_MIN, LR_RAMP_UP_EPOCHS,
                                  LR_SUSTAIN_EPOCHS, LR_DECAY)
display(figures.save(figures.schedule(learning_rate.values(EPOCHS)), OUTPUT_DIR, "schedule"))

# %% [markdown]
# ### The classifier around each backbone
#
# `backbones.build_model` puts the augmentation first, feeds the backbone the pixel scaling its
# weights were trained with (EfficientNets and ConvNeXt take 0–255, DenseNet201 and KerasHub's
# HGNetV2 ImageNet-normalised values; a KerasHub preset's weights are read from its Kaggle Model
# when the kernel has it attached),
# pools the features, applies `HEAD_DROPOUT`, and ends with a softmax that computes in float32:
# under bfloat16 the probabilities and the loss would otherwise lose precision. It is built in
# the accelerator's scope, so its variables are placed on every chip. Each member's Keras summary
# shows, collapsed, when it is built.


# %%
def build(name):
    """One backbone's classifier, compiled with the run's loss (called once per model)."""
    layer = augment.RandomAffine(ROTATION_DEGREES, SHEAR_DEGREES, ZOOM_STDDEV, SHIFT_PIXELS,
                                 FLIP, seed=SEED)
    with timer.stage("build"), device.scope():
        model = backbones.build_model(name, IMAGE_SIZE, augmentation=layer,
                                      weights=parameters.weights_for(WEIGHTS, name),
                                      head_dropout=HEAD_DROPOUT)
        model = train.compile_model(model, label_smoothing=LABEL_SMOOTHING, mixup=MIXUP,
                                    cutmix=CUTMIX, seed=SEED)
    display(backbones.Summary(model))
    return model


# %% [markdown]
# ## Training, evaluation and test predictions, one model at a time
#
# An ensemble trains its members one after another, and each member is released before the
# next is built: build → train → predict validation and test → save → release. Accelerator
# memory then only has to hold the largest member (EfficientNetB7 at 512 px), not all of them.
#
# Each epoch prints one line. The first epoch also pays for compiling the train step (minutes
# for a large backbone on a TPU); its excess over the later epochs is reported as `compile`.
# `loss` and `accuracy` are measured on the augmented training batches as they go by, so they
# trail `val_loss` and `val_accuracy` early on; a validation loss that rises while the training
# loss keeps falling is the sign to stop earlier (fewer `EPOCHS`) or augment more.
# A member whose loss becomes infinite or NaN has diverged (a learning rate too high for it,
# say): it stops after that epoch, is dropped from the blend, and the run goes on with the
# others; `metrics.json` says which member was dropped and why. So is a member whose
# predictions hold NaN or infinity although its loss did not (broken normalisation statistics,
# which only predictions use).
#
# Predictions use **test-time augmentation**: the model also sees each image mirrored (and, with
# `TTA_VIEWS`, flipped upside down or turned a quarter), and the class probabilities of all views
# are averaged. A flower has no handedness, so every view is a fair photo of the same flower, and
# the average cancels some of each view's mistakes. The views are computed on the accelerator
# from the same uint8 batches; the last batch is padded to full size so that every batch splits
# evenly across the chips, and the padding's predictions are dropped.
#
# **Nothing finished is thrown away.** As soon as a member has predicted, its probabilities are
# saved (`probabilities-<backbone>.npz`: validation with ids and labels, test with ids, float32,
# about 4 MB on the competition), and `submission.csv` and `metrics.json` are rewritten from the
# members so far, blended. Each file is replaced atomically, so a session stopped at Kaggle's
# 9-hour limit, or killed, during the second member still leaves the first member's valid
# submission. The saved probabilities also let `build.py blend` blend models across runs
# (other sizes, other backbones) later.

# %%
# Validation during training runs on full batches only (the remainder is scored below).
validation_steps = 0 if TRAIN_ON_VALIDATION else len(validation_labels) // GLOBAL_BATCH
record = report.RunRecord(PARAMETERS, device, VERSIONS, training, steps, GLOBAL_BATCH, timer,
                          None if validation_labels is None else len(validation_labels),
                          len(test_ids), image=IMAGE, compile_cache=compile_counter)
finished = {}  # each model that finished: its probabilities, as saved
for name, model in train.members(BACKBONES, build):
    print(f"--- {name}: {model.count_params():,} parameters")
    with timer.stage("train"):
        validation_data = None if not validation_steps else data.evaluation_dataset(
            splits["val"].files, IMAGE_SIZE, GLOBAL_BATCH, EXCLUDED_IDS)
        fit = train.fit(model, training_data, EPOCHS, steps, learning_rate, validation_data,
                        validation_steps or None)
    record.add_fit(name, fit)
    display(figures.save(figures.training_curves(fit.history, name), OUTPUT_DIR,
                         f"training_{name}"))
    if fit.stopped:
        record.drop(name, fit.stopped)
        print(f"{name} dropped from the blend: {fit.stopped}")
        continue
    validation = None
    try:
        if validation_labels is not None:
            with timer.stage("evaluate"):
                validation = predict.predict(model, data.evaluation_dataset(
                    splits["val"].files, IMAGE_SIZE, GLOBAL_BATCH, EXCLUDED_IDS,
                    count=len(validation_labels)), len(validation_labels), TTA_VIEWS)
        with timer.stage("predict"):
            test = predict.predict(model, data.test_dataset(
                splits["test"].files, IMAGE_SIZE, GLOBAL_BATCH, len(test_ids)), len(test_ids),
                TTA_VIEWS)
    except predict.NonFinitePredictions as error:
        record.drop(name, str(error))
        print(f"{name} dropped from the blend: {error}")
        continue
    if validation is not None:
        record.add_scores(name, evaluate.scores(validation_labels, validation.argmax(axis=-1)))
        print(report.scores_line(name, record.scores[name]))
    finished[name] = probabilities.save(OUTPUT_DIR, probabilities.Member(
        name, test_ids, test, validation_ids, validation_labels, validation))
    # The provisional result: the models so far, blended (see Evaluation).
    blend = probabilities.search_weights(list(finished.values()), BLEND_STEP, SEED)
    test_labels = report.write_results(OUTPUT_DIR, list(finished.values()), blend, record)
    print(f"saved {name}'s probabilities; submission.csv and metrics.json now blend "
          + " + ".join(finished))
if not finished:
    raise RuntimeError("every model diverged: " + "; ".join(
        f"{name} {reason}" for name, reason in record.dropped.items()) + "; lower LR_MAX")

# %% [markdown]
# ## Evaluation
#
# ### What macro F1 rewards
#
# The competition scores the **macro** F1: the F1 score (harmonic mean of precision and recall)
# of each class, averaged with equal weight per class. The 104 classes are very unequal (a few
# hundred roses, a dozen of some orchids), so a model that sacrifices the rare classes to get the
# common ones right loses much more macro F1 than accuracy. Accuracy is printed beside it.
#
# ### Blending, and an honest score for it
#
# The blend weights are searched on a grid over the simplex (every combination of weights in
# steps of `BLEND_STEP` that sum to 1) for the best validation F1. F1 counts arg-maxes, so it is
# flat over stretches of the grid; among weights that tie, the blend with the lowest validation
# log-loss wins (not the grid's first corner, all on one model). A score measured on the same
# images the weights were tuned on is optimistic: the search also fits those images' noise. So
# the weights are also searched on one half of validation and scored on the other half, both
# ways round, and that cross-validated F1 is the number reported as the validation score. The
# submission uses the weights tuned on all of validation. With one backbone the blend is that
# model and both numbers are its F1; trained on validation, the members count equally. The
# blend below is the last one the loop wrote, over every member that finished.

# %%
print("blend weights: " + ", ".join(f"{name} {weight:.2f}"
                                    for name, weight in zip(finished, blend.weights, strict=True)))
if blend.f1 is not None:
    print(f"blend F1: {blend.f1:.4f} cross-validated (the validation score), "
          f"{blend.f1_in_sample:.4f} tuned and scored on the same images (optimistic)")

# %% [markdown]
# The blend's confusion on validation: with many classes, the most-confused pairs ranked by
# count say more than a 104 × 104 matrix; with few, the matrix shows everything.

# %%
if validation_labels is not None:
    validation_predictions = probabilities.weighted_sum(list(finished.values()), blend.weights,
                                                        "validation").argmax(axis=-1)
    blend_scores = evaluate.scores(validation_labels, validation_predictions)
    print(report.scores_line("blend in-sample (optimistic)", blend_scores))
    matrix, present = evaluate.confusion(validation_labels, validation_predictions)
    display(figures.save(figures.confusion(matrix, present, CLASS_NAMES, blend_scores,
                                           "+".join(finished)), OUTPUT_DIR, "confusion_matrix"))

# %% [markdown]
# ### Which classes fail
#
# The macro F1 is the mean of the per-class F1 below, so the classes at the top of this chart
# are where the score is lost. The number beside each name is its validation images: a low F1
# on three images is a weaker signal than on thirty. Look these classes up in the confusion
# pairs above and in the visual validation below.

# %%
if validation_labels is not None:
    class_f1 = evaluate.per_class_f1(validation_labels, validation_predictions)
    print("the ten worst classes on validation: F1, images, class")
    for label, f1, support in class_f1[:10]:
        print(f"  {f1:.3f} {support:4d}  {figures.class_name(label, CLASS_NAMES)}")
    display(figures.save(figures.per_class_f1(class_f1, CLASS_NAMES, "+".join(finished)),
                         OUTPUT_DIR, "per_class_f1"))

# %% [markdown]
# ## Submission
#
# Test images are read in shard order, so the predictions line up with the ids read earlier.
# The file is validated (every test id exactly once, labels in range) and written atomically,
# after every member; the cell below rewrites only `metrics.json`, with the finished record. It
# holds the parameters, versions, per-epoch history and timings, scores, blend weights and
# any dropped member, for the sweep tools to compare runs; `"complete": false` marks the record
# of a run stopped before its last member.
#
# To submit on Kaggle, save a version of the notebook ("Save & Run All"), open that version's
# *Output* tab and press *Submit*. From a terminal, `build.py submit` sends a run that `build.py`
# collected, and `build.py blend --submit` a blend of the probabilities of several runs (other
# sizes, other backbones; see docs/kaggle.md in the kit's repository).

# %%
report.write_record(OUTPUT_DIR, list(finished), blend, record)  # submission.csv is up to date
print(timer.line())
if compile_counter is not None:
    print(compile_counter.line())
print(f"wrote {len(test_ids)} predictions to {os.path.join(OUTPUT_DIR, 'submission.csv')}")

# %% [markdown]
# The file Kaggle scores: a header, then one `id,label` line per test image, the label being the
# class's index in the competition's list of 104 flowers.

# %%
print("id,label", *(f"{id_},{label}" for id_, label in zip(test_ids[:5], test_labels[:5],
                                                          strict=True)), sep="\n")

# %% [markdown]
# ## Visual validation
#
# The blend's mistakes first, each titled with the prediction and the true class, then correct
# predictions. Looking at the mistakes tells you more than the score: two look-alike classes,
# a mislabelled image, or an augmentation that destroys what tells the classes apart.

# %%
if validation_labels is not None:
    # The first few hundred validation images, so that there are mistakes to show first (all
    # of them in this process, also when several processes share the run).
    count = min(len(validation_labels), 256)
    shown = data.evaluation_dataset(splits["val"].files, IMAGE_SIZE, count, EXCLUDED_IDS,
                                    count=len(validation_labels), process=hosts.SINGLE)
    shown_images = np.asarray(next(iter(shown))[0])
    display(figures.save(figures.predictions(shown_images, validation_labels[:count],
                                             validation_predictions[:count], CLASS_NAMES,
                                             model_name="+".join(finished)),
                         OUTPUT_DIR, "validation_predictions"))
print(report.summary_line(list(finished), IMAGE_SIZE, EPOCHS, device.describe(), blend.f1,
                          len(test_ids)))
