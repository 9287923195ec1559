import numpy as np

from referdino.evaluation.metrics import boundary_map, contour_accuracy, region_similarity, video_jf


def test_region_similarity_by_hand():
    p = np.zeros((4, 4), bool)
    g = np.zeros((4, 4), bool)
    p[0:2, 0:2] = True  # 4 pixels
    g[1:3, 1:3] = True  # 4 pixels, overlap 1
    assert region_similarity(p, g) == 1 / 7
    assert region_similarity(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    assert region_similarity(p, np.zeros((4, 4))) == 0.0


def test_boundary_map_rules():
    m = np.zeros((5, 5), bool)
    m[1:4, 1:4] = True
    b = boundary_map(m)
    # inside pixels differ from a right/lower/lower-right neighbour only on the square's right/bottom rim,
    # outside pixels whose right/lower/lower-right neighbour is inside are boundary too
    expected = np.array(
        [
            [1, 1, 1, 1, 0],
            [1, 0, 0, 1, 0],
            [1, 0, 0, 1, 0],
            [1, 1, 1, 1, 0],
            [0, 0, 0, 0, 0],
        ],
        bool,
    )
    assert (b == expected).all()
    full = np.ones((4, 6), bool)
    assert not boundary_map(full).any()  # the frame edge is no boundary


def test_contour_accuracy_cases():
    m = np.zeros((20, 30), bool)
    m[5:12, 6:20] = True
    assert contour_accuracy(m, m) == 1.0
    assert contour_accuracy(np.zeros_like(m), np.zeros_like(m)) == 1.0
    assert contour_accuracy(m, np.zeros_like(m)) == 0.0
    assert contour_accuracy(np.zeros_like(m), m) == 0.0
    # tolerance radius ceil(0.008 * hypot(20, 30)) = 1: a one-pixel shift still matches entirely
    shifted = np.roll(m, 1, axis=1)
    assert contour_accuracy(shifted, m) == 1.0
    far = np.roll(m, 5, axis=0)
    assert 0.0 < contour_accuracy(far, m) < 1.0


def test_contour_accuracy_partial_by_hand():
    # 10x10 frame: radius ceil(0.008 * 14.14) = 1. GT boundary is a 3x3 square outline (8 + rim pixels);
    # prediction adds an isolated far pixel whose 4 boundary pixels cannot match
    g = np.zeros((10, 10), bool)
    g[2:5, 2:5] = True
    p = g.copy()
    p[8, 8] = True
    pb, gb = boundary_map(p), boundary_map(g)
    n_extra = int(pb.sum() - gb.sum())
    precision = gb.sum() / pb.sum()
    f = 2 * precision * 1.0 / (precision + 1.0)
    assert n_extra == 4
    assert abs(contour_accuracy(p, g) - f) < 1e-12


def test_video_jf_means_over_frames():
    a = np.zeros((2, 6, 6), bool)
    a[0, 1:3, 1:3] = True
    b = a.copy()
    b[1, 0, 0] = True  # frame 1: prediction empty, GT one pixel -> J 0, F 0
    j, f = video_jf(a, b)
    assert j == 0.5 and f == 0.5
