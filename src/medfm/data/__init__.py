"""Medical data: image I/O, manifests, synthetic phantoms with ground truth, offline real assets."""
