"""BASS adaptive superpixels (Uziel, Ronen & Freifeld, ICCV 2019), guided by an attribution map, on CPU.

The paper partitions an image into subobject regions with a Bayesian Gaussian mixture over colour
and position whose number of components adapts to the image ("Subobject Region Partitioning using
Adaptive Segmentation"), and says the classifier's attribution map guides that partition. The
public BASS reference is CUDA only (its deprecated PyTorch port is slow and global-state) and no
maintained CPU implementation exists, so this module is written from the model's description:
vectorised NumPy plus ``numba`` kernels (compiled once and cached on disk), at full resolution.

Model. Every pixel has features ``(L/100, a/100, b/100)`` (CIE Lab of sRGB under D65) and position
``(x, y)``. Superpixel ``k`` is a Gaussian with its own colour mean, a fixed diagonal colour
covariance ``(i_std/2)² I`` and a spatial covariance equal to the posterior mean of an
inverse-Wishart prior, ``Σₖ = (νₖ·(νₖ/12)·I + Sₖ) / (Nₖ + νₖ − 3)``, where ``νₖ`` is the superpixel's
prior pixel count (``n²`` at start, halved by a split, summed by a merge), ``νₖ/12`` the per-axis
variance of a square of that area and ``Sₖ`` the position scatter of its ``Nₖ`` pixels.

Inference (hard-assignment, as in the reference). A hexagonal grid of cells of about ``n²``
pixels starts the labelling; each iteration re-estimates the parameters (M-step) and then runs
four E-sweeps in which only boundary pixels move, only to a 4-neighbour's label, and only when the
pixel is a simple point of both the region it leaves and the one it joins (8-neighbourhood lookup
table), so every region stays 4-connected. A pixel takes the label maximising
``−J‖f − μₖ‖² − (s − mₖ)ᵀΣₖ⁻¹(s − mₖ) − log|Σₖ| − potts·#{8-neighbours labelled ≠ k}``.
Split moves (BFS from two seeds beside the centroid) and merge moves (with the left or top
neighbour) are accepted when the per-channel Normal–Gamma colour marginal likelihood
(``a₀ = 10⁴``, ``b₀ = i_std·a₀``, flat prior on the mean) improves by more than ``−2``; a merge
also pays ``log alpha``, so a larger ``alpha`` keeps more regions.

Attribution guidance (the paper's idea; the released code runs BASS on the plain image). The
attribution map ``A`` (H×W in [0, 1]) becomes a fourth feature channel ``attribution_weight·A``
that enters both the pixel likelihood and the split/merge marginal likelihoods exactly like a
colour channel. A step of 1 in ``A`` therefore counts like a colour step of ``100·attribution_weight``
Lab units: regions split where the classifier's evidence changes and merge where it is flat.
The default 0.1 makes a full attribution step as strong as a 10-unit colour edge (about what a
split needs) while a smooth Grad-CAM ramp barely bends the colour-driven boundaries.

Schedule and speed. Splits run at iterations 1, 5, 9, … (seed axis alternating), merges two
iterations later (left/top partner alternating); the reference's sign convention ``−L/100`` is
irrelevant to a Gaussian and dropped. E-sweeps visit the four (y mod 2, x mod 2) pixel subsets in
turn and re-evaluate only pixels whose 3×3 window changed since their last visit, which gives the
same result as re-evaluating all of them while parameters are fixed. Within one subset no pixel
reads a label another writes, so its rows run in parallel on numba's threads (capped per process
with :func:`safeview.threads.set_threads`), with the labels of a single-threaded run.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from safeview.errors import ImageError
from safeview.segment import connected_labels

#: Normal–Gamma shape of the split/merge marginal likelihood (the reference's a₀).
_A0 = 1.0e4
#: A split or merge is accepted when it changes the log marginal likelihood by more than this.
_ACCEPT = -2.0
#: E-sweeps between two parameter updates (the reference's inner iterations).
_INNER_SWEEPS = 4


def _simple_point_table() -> np.ndarray:
    """256-entry table: is the centre pixel simple for a region given which 8-neighbours belong to it.

    Bit ``i`` of the index is neighbour ``i`` in the order NW, N, NE, W, E, SW, S, SE. A point is
    simple for 4-connected regions (8-connected complement) when its region-neighbours that are
    4-adjacent to it form one 4-component and its other neighbours form one 8-component.
    """
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    four = {(-1, 0), (0, -1), (0, 1), (1, 0)}

    def components(cells: set, eight: bool) -> list[set]:
        found, left = [], set(cells)
        while left:
            stack, comp = [left.pop()], set()
            while stack:
                y, x = stack.pop()
                comp.add((y, x))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        if (dy or dx) and (eight or not (dy and dx)) and (y + dy, x + dx) in left:
                            left.discard((y + dy, x + dx))
                            stack.append((y + dy, x + dx))
            found.append(comp)
        return found

    table = np.zeros(256, dtype=np.bool_)
    for pattern in range(256):
        inside = {offsets[i] for i in range(8) if pattern >> i & 1}
        outside = set(offsets) - inside
        t4 = sum(1 for comp in components(inside, eight=False) if comp & four)
        t8 = len(components(outside, eight=True))
        table[pattern] = t4 == 1 and t8 == 1
    return table


_SIMPLE = _simple_point_table()
_ONES = np.array([bin(p).count("1") for p in range(256)], dtype=np.int64)


@njit(cache=True)
def _lab_features(image, attribution, weight, use_attribution):
    """(H·W, C) float32 features: Lab/100 of sRGB (D65), then ``weight·A`` when ``use_attribution``.

    The sRGB decoding is a 256-entry table and the Lab cube root a 4096-segment linear
    interpolation (error below 10⁻⁴ Lab units), which keeps this step a few ns per pixel.
    """
    h, w = image.shape[0], image.shape[1]
    channels = 4 if use_attribution else 3
    out = np.empty((h * w, channels), dtype=np.float32)
    linear = np.empty(256)
    for v in range(256):
        c = v / 255.0
        linear[v] = c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    segments = 4096
    top = 1.001  # X/Xn and Z/Zn reach just above 1 for white
    eps = (6.0 / 29.0) ** 3
    curve = np.empty(segments + 1)
    for j in range(segments + 1):
        t = top * j / segments
        curve[j] = t ** (1.0 / 3.0) if t > eps else t / (3.0 * (6.0 / 29.0) ** 2) + 4.0 / 29.0
    scale = segments / top
    xyz = np.empty(3)
    for y in range(h):
        for x in range(w):
            r = linear[image[y, x, 0]]
            g = linear[image[y, x, 1]]
            b = linear[image[y, x, 2]]
            xyz[0] = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047
            xyz[1] = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b
            xyz[2] = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883
            for c in range(3):
                u = min(xyz[c], top) * scale
                j = min(int(u), segments - 1)
                xyz[c] = curve[j] + (u - j) * (curve[j + 1] - curve[j])
            i = y * w + x
            out[i, 0] = 1.16 * xyz[1] - 0.16
            out[i, 1] = 5.0 * (xyz[0] - xyz[1])
            out[i, 2] = 2.0 * (xyz[1] - xyz[2])
            if use_attribution:
                out[i, 3] = weight * attribution[y, x]
    return out


@njit(cache=True)
def _hex_init(h, w, n):
    """Nearest-centre labels of a hexagonal lattice whose cells hold about ``n²`` pixels."""
    step = n * math.sqrt(2.0 / math.sqrt(3.0))  # centre spacing along a row
    row_gap = step * math.sqrt(3.0) / 2.0  # spacing between rows: step·row_gap = n²
    rows = max(1, int(math.ceil(h / row_gap)))
    cols = max(1, int(math.ceil(w / step)))
    labels = np.empty(h * w, dtype=np.int32)
    for y in range(h):
        # the nearest centre lies in one of the two rows around y, at the rounded column
        below = int(math.floor((y + 0.5) / row_gap - 0.5))
        for x in range(w):
            best, best_d = 0, np.inf
            for r in range(max(0, below), min(rows, below + 2)):
                shift = 0.5 * (r % 2)
                c = min(max(int(round((x + 0.5) / step - 0.5 - shift)), 0), cols - 1)
                dx = x + 0.5 - (c + 0.5 + shift) * step
                dy = y + 0.5 - (r + 0.5) * row_gap
                d = dx * dx + dy * dy
                if d < best_d:
                    best, best_d = r * cols + c, d
            labels[y * w + x] = best
    return labels


@njit(cache=True)
def _moments(labels, feats, w, k):
    """Per-label count, feature sums and squares, and position sums (x, y, xx, xy, yy), in float64.

    Runs of equal labels along a row are summed locally first, so consecutive pixels do not
    serialise on the same accumulator.
    """
    channels = feats.shape[1]
    count = np.zeros(k)
    fsum = np.zeros((k, channels))
    fsq = np.zeros((k, channels))
    pos = np.zeros((k, 5))
    run_sum = np.zeros(channels)
    run_sq = np.zeros(channels)
    for y in range(labels.shape[0] // w):
        fy = float(y)
        x0 = 0
        while x0 < w:
            lab = labels[y * w + x0]
            x1 = x0
            run_sum[:] = 0.0
            run_sq[:] = 0.0
            while x1 < w and labels[y * w + x1] == lab:
                for c in range(channels):
                    v = feats[y * w + x1, c]
                    run_sum[c] += v
                    run_sq[c] += v * v
                x1 += 1
            m = float(x1 - x0)
            sx = 0.5 * m * (x0 + x1 - 1)  # sum of x over the run
            sxx = ((x1 - 1) * x1 * (2 * x1 - 1) - (x0 - 1) * x0 * (2 * x0 - 1)) / 6.0
            count[lab] += m
            for c in range(channels):
                fsum[lab, c] += run_sum[c]
                fsq[lab, c] += run_sq[c]
            pos[lab, 0] += sx
            pos[lab, 1] += m * fy
            pos[lab, 2] += sxx
            pos[lab, 3] += sx * fy
            pos[lab, 4] += m * fy * fy
            x0 = x1
    return count, fsum, fsq, pos


def _gaussians(count, fsum, pos, prior):
    """Per-label parameters packed in one row each (one cache line per label in the E-step):
    colour means, position mean (x, y), inverse spatial covariance (xx, xy, yy), its log-determinant."""
    n = np.maximum(count, 1.0)
    mx, my = pos[:, 0] / n, pos[:, 1] / n
    sxx = pos[:, 2] - n * mx * mx
    sxy = pos[:, 3] - n * mx * my
    syy = pos[:, 4] - n * my * my
    psi = prior * prior / 12.0  # ν·(ν/12): prior scatter of a square of ν pixels, weighted by ν
    dof = np.maximum(count + prior - 3.0, 1.0)
    a, b, d = (psi + sxx) / dof, sxy / dof, (psi + syy) / dof
    det = np.maximum(a * d - b * b, 1e-9)
    spatial = np.stack([mx, my, d / det, -b / det, a / det, np.log(det)], axis=1)
    return np.ascontiguousarray(np.concatenate([fsum / n[:, None], spatial], axis=1))


@njit(cache=True, inline="always")
def _fit(i, x, y, k, feats, params, precision):
    """Colour and position log likelihood of pixel ``i`` at ``(x, y)`` under label ``k`` (up to a constant)."""
    channels = feats.shape[1]
    s = 0.0
    for c in range(channels):
        d = feats[i, c] - params[k, c]
        s += d * d
    dx = x - params[k, channels]
    dy = y - params[k, channels + 1]
    spatial = params[k, channels + 2] * dx * dx + 2.0 * params[k, channels + 3] * dx * dy
    return -precision * s - spatial - params[k, channels + 4] * dy * dy - params[k, channels + 5]


@njit(cache=True, inline="always")
def _pattern(nb, k):
    """Bit ``j`` set when 8-neighbour ``j`` has label ``k``."""
    p = 0
    for j in range(8):
        p |= (nb[j] == k) << j
    return p


@njit(cache=True, parallel=True)
def _sweep(labels, dirty, feats, h, w, py, px, params, precision, potts, simple, ones):
    """Update the boundary pixels with ``y % 2 == py`` and ``x % 2 == px`` (none of them 8-adjacent).

    No pixel of the subset reads a label another one writes, so rows run in parallel (numba
    threads) with the same result as a sequential pass. Only pixels whose 3×3 window changed since they were last visited (``dirty``) are evaluated:
    with the parameters fixed between M-steps, the others would reach the same decision again.
    ``simple`` and ``ones`` are the simple-point and popcount tables of an 8-neighbour pattern.
    """
    changed = 0
    for r in prange((h - py + 1) // 2):
        y = py + 2 * r
        nb = np.empty(8, dtype=np.int32)  # NW, N, NE, W, E, SW, S, SE; -1 outside the image
        for x in range(px, w, 2):
            i = y * w + x
            if not dirty[i]:
                continue
            dirty[i] = False
            own = labels[i]
            up = labels[i - w] if y > 0 else own
            down = labels[i + w] if y < h - 1 else own
            left = labels[i - 1] if x > 0 else own
            right = labels[i + 1] if x < w - 1 else own
            if up == own and down == own and left == own and right == own:
                continue  # not on a boundary
            top, bottom, first, last = y == 0, y == h - 1, x == 0, x == w - 1
            nb[0] = -1 if top or first else labels[i - w - 1]
            nb[1] = -1 if top else up
            nb[2] = -1 if top or last else labels[i - w + 1]
            nb[3] = -1 if first else left
            nb[4] = -1 if last else right
            nb[5] = -1 if bottom or first else labels[i + w - 1]
            nb[6] = -1 if bottom else down
            nb[7] = -1 if bottom or last else labels[i + w + 1]
            pattern = _pattern(nb, own)
            if not simple[pattern]:
                continue
            inside = 8 - ones[_pattern(nb, -1)]
            best = own
            best_v = _fit(i, x, y, own, feats, params, precision) - potts * (inside - ones[pattern])
            for q in (1, 3, 4, 6):
                cand = nb[q]
                if cand < 0 or cand == own or cand == best:
                    continue
                pattern = _pattern(nb, cand)
                if not simple[pattern]:
                    continue
                v = _fit(i, x, y, cand, feats, params, precision) - potts * (inside - ones[pattern])
                if v > best_v:
                    best, best_v = cand, v
            if best != own:
                labels[i] = best
                changed += 1
                for yy in range(max(0, y - 1), min(h, y + 2)):
                    for xx in range(max(0, x - 1), min(w, x + 2)):
                        dirty[yy * w + xx] = True
    return changed


@njit(cache=True)
def _log_marginal(n, fsum, fsq, a0, b0):
    """Per-channel Normal–Gamma log marginal likelihood of ``n`` values (flat prior on the mean)."""
    if n <= 0.0:
        return 0.0
    an = a0 + 0.5 * n
    res = 0.0
    for c in range(fsum.shape[0]):
        ss = max(fsq[c] - fsum[c] * fsum[c] / n, 0.0)
        res += math.lgamma(an) - math.lgamma(a0) + a0 * math.log(b0) - an * math.log(b0 + 0.5 * ss)
        res -= 0.5 * math.log(n)
    return res


@njit(cache=True)
def _by_label(labels, k):
    """Pixel indices grouped by label (counting sort) and the start of each group."""
    start = np.zeros(k + 1, dtype=np.int64)
    for i in range(labels.shape[0]):
        start[labels[i] + 1] += 1
    for j in range(k):
        start[j + 1] += start[j]
    fill = start[:-1].copy()
    order = np.empty(labels.shape[0], dtype=np.int64)
    for i in range(labels.shape[0]):
        order[fill[labels[i]]] = i
        fill[labels[i]] += 1
    return order, start


@njit(cache=True)
def _split(labels, feats, h, w, k, count, fsum, fsq, pos, vertical, a0, b0):
    """Try to split every region in two by a two-seed BFS.

    Returns the parent of each new label and the moments (as ``_moments``) of the new labels.
    """
    channels = feats.shape[1]
    inv_w = 1.0 / w
    order, start = _by_label(labels, k)
    side = np.zeros(labels.shape[0], dtype=np.int8)
    queue = np.empty(labels.shape[0], dtype=np.int64)
    parents = np.empty(k, dtype=np.int64)
    new_count = np.zeros(k)
    new_sum = np.zeros((k, channels))
    new_sq = np.zeros((k, channels))
    new_pos = np.zeros((k, 5))
    n_new = k
    for lab in range(k):
        m = count[lab]
        if m < 4:
            continue
        cx, cy = pos[lab, 0] / m, pos[lab, 1] / m
        ox, oy = (0.0, 1.0) if vertical else (1.0, 0.0)
        s1, s2, d1, d2 = -1, -1, np.inf, np.inf
        for t in range(start[lab], start[lab + 1]):
            i = order[t]
            y = int((i + 0.5) * inv_w)
            x = i - y * w
            e1 = (x - cx + ox) ** 2 + (y - cy + oy) ** 2
            e2 = (x - cx - ox) ** 2 + (y - cy - oy) ** 2
            if e1 < d1:
                s1, d1 = i, e1
            if e2 < d2:
                s2, d2 = i, e2
        if s1 == s2:
            continue
        n1 = np.zeros(2)
        sums = np.zeros((2, channels))
        sqs = np.zeros((2, channels))
        moved = np.zeros(5)  # position sums of the second half
        head, tail = 0, 2
        queue[0], queue[1] = s1, s2
        side[s1], side[s2] = 1, 2
        while head < tail:
            i = queue[head]
            head += 1
            s = side[i]
            n1[s - 1] += 1.0
            for c in range(channels):
                v = feats[i, c]
                sums[s - 1, c] += v
                sqs[s - 1, c] += v * v
            y = int((i + 0.5) * inv_w)
            x = i - y * w
            if s == 2:
                moved[0] += x
                moved[1] += y
                moved[2] += x * x
                moved[3] += x * y
                moved[4] += y * y
            for dy, dx in ((-1, 0), (0, -1), (0, 1), (1, 0)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w:
                    j = yy * w + xx
                    if labels[j] == lab and side[j] == 0:
                        side[j] = s
                        queue[tail] = j
                        tail += 1
        gain = (
            _log_marginal(n1[0], sums[0], sqs[0], a0, b0)
            + _log_marginal(n1[1], sums[1], sqs[1], a0, b0)
            - _log_marginal(m, fsum[lab], fsq[lab], a0, b0)
        )
        accept = tail == m and gain > _ACCEPT  # the region was one 4-connected piece
        for t in range(tail):
            i = queue[t]
            if accept and side[i] == 2:
                labels[i] = n_new
            side[i] = 0
        if accept:
            parents[n_new - k] = lab
            new_count[n_new - k] = n1[1]
            new_sum[n_new - k] = sums[1]
            new_sq[n_new - k] = sqs[1]
            new_pos[n_new - k] = moved
            n_new += 1
    m = n_new - k
    return parents[:m], new_count[:m], new_sum[:m], new_sq[:m], new_pos[:m]


@njit(cache=True)
def _merge(k, partner, count, fsum, fsq, a0, b0, log_alpha):
    """Greedily merge each region with its proposed partner; returns the label each old label maps to."""
    target = np.arange(k)
    used = np.zeros(k, dtype=np.bool_)
    for lab in range(k):
        f = partner[lab]
        if f < 0 or used[lab] or used[f]:
            continue
        gain = (
            _log_marginal(count[lab] + count[f], fsum[lab] + fsum[f], fsq[lab] + fsq[f], a0, b0)
            - _log_marginal(count[lab], fsum[lab], fsq[lab], a0, b0)
            - _log_marginal(count[f], fsum[f], fsq[f], a0, b0)
            - log_alpha
        )
        if gain > _ACCEPT:
            target[f] = lab
            used[lab] = used[f] = True
    return target


def _partners(labels2d: np.ndarray, k: int, vertical: bool) -> np.ndarray:
    """For every label, the left (or top) neighbour label it shares the longest boundary with, or -1."""
    if vertical:
        here, there = labels2d[1:, :], labels2d[:-1, :]
    else:
        here, there = labels2d[:, 1:], labels2d[:, :-1]
    edge = here != there
    codes = here[edge].astype(np.int64) * k + there[edge]
    partner = np.full(k, -1, dtype=np.int64)
    if codes.size == 0:
        return partner
    pairs, counts = np.unique(codes, return_counts=True)
    owner = pairs // k
    best = np.lexsort((-counts, owner))  # by owner, longest shared boundary first
    first = np.ones(best.size, dtype=bool)
    first[1:] = owner[best][1:] != owner[best][:-1]
    partner[owner[best][first]] = pairs[best][first] % k
    return partner


def _as_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"bass() needs an H×W×3 image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ImageError(f"bass() needs a uint8 RGB image, got dtype {image.dtype}")
    return np.ascontiguousarray(image)


def bass(
    image: np.ndarray,
    attribution: np.ndarray | None = None,
    *,
    n: int = 15,
    i_std: float = 0.018,
    potts: float = 0.5,
    alpha: float = 0.5,
    attribution_weight: float = 0.1,
    iterations: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Adaptive superpixels of ``image`` (H×W×3 uint8), optionally guided by ``attribution`` (H×W in [0, 1]).

    ``n``: initial superpixels hold about ``n²`` pixels. ``i_std``: colour scale (smaller gives more
    irregular regions). ``potts``: boundary smoothing per disagreeing 8-neighbour. ``alpha``: merge
    prior; larger keeps more regions. ``attribution_weight``: a step of 1 in the attribution map
    counts like ``100·attribution_weight`` Lab units of colour (0 turns guidance off).
    ``iterations``: parameter updates, each followed by four E-sweeps (default ``n``, as the
    reference). ``seed``: accepted for interface symmetry; inference is deterministic (fixed
    acceptance thresholds, no sampling), so every seed gives the same result.
    Returns (H, W) int32 labels ``0..K-1``, each region 4-connected.
    """
    del seed  # deterministic hard-assignment inference, as in the reference
    image = _as_image(image)
    if n < 1 or i_std <= 0 or alpha <= 0 or potts < 0 or attribution_weight < 0:
        raise ValueError("bass() needs n >= 1, i_std > 0, alpha > 0, potts >= 0 and attribution_weight >= 0")
    h, w = image.shape[:2]
    if attribution is not None and np.shape(attribution) != (h, w):
        raise ValueError(f"attribution shape {np.shape(attribution)} does not match image {(h, w)}")
    use_attr = attribution is not None and attribution_weight > 0
    if use_attr:
        attribution = np.clip(np.nan_to_num(np.asarray(attribution, dtype=np.float32)), 0.0, 1.0)
    else:
        attribution = np.zeros((1, 1), dtype=np.float32)
    feats = _lab_features(image, attribution, float(attribution_weight), use_attr)
    labels = _infer(feats, h, w, n, i_std, potts, alpha, n if iterations is None else iterations)
    return connected_labels(labels.reshape(h, w))  # already 4-connected; this renumbers 0..K-1


def _infer(
    feats: np.ndarray, h: int, w: int, n: int, i_std: float, potts: float, alpha: float, iterations: int
) -> np.ndarray:
    """BASS inference on (H·W, C) features; returns the flat label array (each label one 4-connected region)."""
    labels = connected_labels(_hex_init(h, w, float(n)).reshape(h, w)).ravel()
    k = int(labels.max()) + 1
    prior = np.full(k, float(n * n))
    precision = 1.0 / (i_std / 2.0) ** 2
    a0, b0, log_alpha = _A0, i_std * _A0, math.log(alpha)
    dirty = np.empty(h * w, dtype=np.bool_)
    for it in range(iterations):
        stats = _moments(labels, feats, w, k)  # count, colour sums, colour squares, position sums
        if it % 4 == 1:  # split, alternating the seed axis between rounds
            parents, *halves = _split(labels, feats, h, w, k, *stats, it % 8 == 5, a0, b0)
            for total, half in zip(stats, halves):
                np.subtract.at(total, parents, half)
            stats = tuple(np.concatenate([total, half]) for total, half in zip(stats, halves))
            prior[parents] /= 2.0
            prior = np.concatenate([prior, prior[parents]])
            k = prior.size
        elif it % 4 == 3:  # merge with the left or top neighbour, alternating between rounds
            partner = _partners(labels.reshape(h, w), k, it % 8 == 7)
            target = _merge(k, partner, *stats[:3], a0, b0, log_alpha)
            keep = target == np.arange(k)
            merged = []
            for total in (*stats, prior):
                summed = np.zeros_like(total)
                np.add.at(summed, target, total)
                merged.append(summed[keep])
            *stats, prior = merged
            labels = (np.cumsum(keep) - 1)[target].astype(np.int32)[labels]
            k = prior.size
        count, fsum, fsq, pos = stats
        params = _gaussians(count, fsum, pos, prior)
        dirty[:] = True
        for _ in range(_INNER_SWEEPS):
            for py, px in ((0, 0), (0, 1), (1, 0), (1, 1)):
                _sweep(labels, dirty, feats, h, w, py, px, params, precision, float(potts), _SIMPLE, _ONES)
    return labels
