"""What every module may know about Fashion-MNIST without loading it (no TensorFlow here, so
`--report-only` and the benchmarks' orchestrators stay light): its classes and split sizes."""

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SPLIT_SIZES = {"train": 60000, "test": 10000}
