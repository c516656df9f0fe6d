import numpy as np
from skimage import data

from safeview.faces import DETECTOR, detect_faces


def test_finds_the_astronauts_face():
    image = data.astronaut()
    faces = detect_faces(image)
    assert faces and all(f.label == "face" and f.source == "faces" and f.detector == DETECTOR for f in faces)
    # her face lies around x 170..290, y 50..180 in scikit-image's astronaut photo
    covered = [f for f in faces if f.mask[110, 230]]
    assert covered, [f.box for f in faces]
    x0, y0, x1, y1 = covered[0].box
    assert x1 - x0 < 200 and y1 - y0 < 200  # the face, not the picture


def test_real_faces_found_and_non_faces_mostly_not():
    # LFW crops scikit-image ships: the first 100 are faces, the last 100 are not
    crops = data.lfw_subset()
    import cv2

    def framed(crop: np.ndarray) -> np.ndarray:  # a 25 px crop shown at 64 px inside some context
        grey = cv2.resize((crop * 255).astype(np.uint8), (64, 64), interpolation=cv2.INTER_CUBIC)
        return np.repeat(np.pad(grey, 16, mode="edge")[..., None], 3, axis=2)

    faces = [bool(detect_faces(framed(c))) for c in crops[:100:5]]
    others = [bool(detect_faces(framed(c))) for c in crops[100::5]]
    assert sum(faces) >= 18 and sum(others) <= 2


def test_no_faces_on_a_cat_or_tiny_images():
    assert detect_faces(data.chelsea()) == []
    assert detect_faces(np.zeros((10, 10, 3), np.uint8)) == []
