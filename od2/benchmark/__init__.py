"""``od2 bench``: od2 against torchvision's RetinaNet and pycocotools on one machine, in one run."""
