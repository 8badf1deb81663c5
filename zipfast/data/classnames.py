"""Real label sets used by the planted task and the benchmarks."""

# EuroSAT with the CoOp/ZIP class-name spellings.
EUROSAT = [
    "Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road",
    "Industrial Buildings", "Pasture Land", "Permanent Crop Land", "Residential Buildings",
    "River", "Sea or Lake",
]

CIFAR100 = [
    "apple", "aquarium fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
    "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
    "kangaroo", "keyboard", "lamp", "lawn mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple tree", "motorcycle", "mountain", "mouse", "mushroom", "oak tree", "orange", "orchid",
    "otter", "palm tree", "pear", "pickup truck", "pine tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow tree", "wolf", "woman", "worm",
]

LABEL_SETS = {"eurosat": EUROSAT, "cifar100": CIFAR100}

# The built-in planted tasks (image features only, no pixels): name → label set.
PLANTED_TASKS = {"planted": "eurosat", "planted-cifar100": "cifar100"}
