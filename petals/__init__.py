"""Petals: the package the flowers notebook narrates, one module per stage of the data flow.

Everything here runs inside a kernel (a built kernel carries the modules its notebook imports);
nothing here imports the local side (`kit/`, `build.py`). The local side uses this package only
through SURFACE; tests/test_structure.py holds both rules.
"""

# The competition's facts, used by the notebook's package and by the build kit alike.
COMPETITION = "tpu-getting-started"  # the slug: data mount, GCS path, kernel source, submission
# Images in each split of the competition data (the same counts at every image size).
TRAIN_IMAGES, VALIDATION_IMAGES, TEST_IMAGES = 12753, 3712, 7382

# The competition's class names, index = label (as in every public kernel of the competition).
CLASSES = (
    "pink primrose",
    "hard-leaved pocket orchid",
    "canterbury bells",
    "sweet pea",
    "wild geranium",
    "tiger lily",
    "moon orchid",
    "bird of paradise",
    "monkshood",
    "globe thistle",
    "snapdragon",
    "colt's foot",
    "king protea",
    "spear thistle",
    "yellow iris",
    "globe-flower",
    "purple coneflower",
    "peruvian lily",
    "balloon flower",
    "giant white arum lily",
    "fire lily",
    "pincushion flower",
    "fritillary",
    "red ginger",
    "grape hyacinth",
    "corn poppy",
    "prince of wales feathers",
    "stemless gentian",
    "artichoke",
    "sweet william",
    "carnation",
    "garden phlox",
    "love in the mist",
    "cosmos",
    "alpine sea holly",
    "ruby-lipped cattleya",
    "cape flower",
    "great masterwort",
    "siam tulip",
    "lenten rose",
    "barberton daisy",
    "daffodil",
    "sword lily",
    "poinsettia",
    "bolero deep blue",
    "wallflower",
    "marigold",
    "buttercup",
    "daisy",
    "common dandelion",
    "petunia",
    "wild pansy",
    "primula",
    "sunflower",
    "lilac hibiscus",
    "bishop of llandaff",
    "gaura",
    "geranium",
    "orange dahlia",
    "pink-yellow dahlia",
    "cautleya spicata",
    "japanese anemone",
    "black-eyed susan",
    "silverbush",
    "californian poppy",
    "osteospermum",
    "spring crocus",
    "iris",
    "windflower",
    "tree poppy",
    "gazania",
    "azalea",
    "water lily",
    "rose",
    "thorn apple",
    "morning glory",
    "passion flower",
    "lotus",
    "toad lily",
    "anthurium",
    "frangipani",
    "clematis",
    "hibiscus",
    "columbine",
    "desert-rose",
    "tree mallow",
    "magnolia",
    "cyclamen",
    "watercress",
    "canna lily",
    "hippeastrum",
    "bee balm",
    "pink quill",
    "foxglove",
    "bougainvillea",
    "camellia",
    "mallow",
    "mexican petunia",
    "bromelia",
    "blanket flower",
    "trumpet creeper",
    "blackberry lily",
    "common tulip",
    "wild rose",
)
NUM_CLASSES = len(CLASSES)

# What the local side (kit/, build.py) may import from this package, and what for.
SURFACE = (
    # The competition's facts.
    "COMPETITION",
    "TRAIN_IMAGES",
    "VALIDATION_IMAGES",
    "TEST_IMAGES",
    "parameters",  # a run's parameters, checked before anything starts (runner, sweeps, kernels)
    "files",  # results written atomically
    "hosts",  # the variables that make processes one run (the launcher)
    "data",  # the competition's folder layout (the demo data)
    "submission",  # submission.csv written, read and checked
    "metrics",  # metrics.json written (blending runs)
    "output_folder",  # an earlier run's results never overwritten (runner, launcher)
    "probabilities",  # each model's saved probabilities (blending runs)
    "ensemble",  # blend weights searched and applied (blending runs)
    "evaluate",  # macro F1 (blending runs)
    "compile_cache",  # the compiled programs' dataset (build.py cache-dataset)
)
