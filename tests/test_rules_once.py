r"""Each input rule is written once: exposure times, bit depth, image to codes.

The three rules live in :mod:`deepinv_icrf.bracket` (:func:`check_exposure_times`,
:func:`check_bit_depth`, :func:`image_codes` with :func:`codes_to_unit`), the only place that
raises their errors. Two kinds of tests keep it so:

- a scan of the package's source (AST) for the marks a copy leaves: an error message about
  exposure times, a bit depth or the dtypes of images, a ``check_*`` helper called on
  ``"exposure_times"``/``"bit_depth"``, a comparison with ``np.uint8``, a division of images by
  ``2**bits - 1`` or 255. Every mark outside ``bracket.py`` must be in :data:`ALLOWED` (with
  the reason it is not a copy) or :data:`PENDING` (a copy in a module other work is changing,
  to be switched); an entry that matches nothing fails too, so the lists stay exact;
- the public entry points, given the same bad input, raise the same exception with the same
  message.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "deepinv_icrf"
HOME = "deepinv_icrf/bracket.py"

#: Marks that are not copies of a rule: ``(module path, enclosing function, rule)``.
ALLOWED = {
    # the generic float-tensor check says what float codes are in its message
    ("deepinv_icrf/_checks.py", "check_float", "codes"),
    # times read from files: one value at a time, named by its file and line, with the
    # plausibility bounds of text (1 ns to 1e9 s); the bracket checks the array at the door
    ("deepinv_icrf/io/exposures.py", "check_exposure_time", "times"),
    ("deepinv_icrf/io/exposures.py", "parse_exposure_time", "times"),
    # a folder's equal times, named by their files
    ("deepinv_icrf/data/folder.py", "read_exposure_folder", "times"),
    # the dtypes an image file format can hold (writing, not reading codes)
    ("deepinv_icrf/io/images.py", "write_image", "codes"),
    # the dtype an 8-bit JPEG decodes to (a decoder's output, before any codes are read)
    ("deepinv_icrf/io/images.py", "_decode_jpeg", "codes"),
    # the linearity loss's cached per-stack scan: tolerant (1e-3) and NaN-permissive by
    # design (a NaN pixel fails the valid mask), unlike a bracket's codes at the door
    (
        "deepinv_icrf/loss/linearity.py",
        "RadiometricLinearityLoss._check_codes",
        "codes",
    ),
    # the listed order against the images' brightness: a rule about what the frames show
    ("deepinv_icrf/functional/exposure_order.py", "check_exposure_order", "times"),
    # the histogram fit asks for a bit depth when the codes do not show one (advice)
    ("deepinv_icrf/training/distributed.py", "_local_bit_depth", "codes"),
}

#: Copies in modules that other work is changing (functional/codefit.py, calibration/,
#: cli/): each is to call the rule in bracket.py instead, then leave this list.
PENDING: set[tuple[str, str, str]] = set()

_MESSAGES = {
    "times": re.compile(
        r"(Expected|distinct) `(exposure_times|listed_times)`|exposure times? (must|to be)"
        r"|[Dd]uplicate exposure times"
    ),
    "bit depth": re.compile(r"Expected `bit_depth`|`bit_depth` must"),
    "codes": re.compile(r"uint8|uint16|2\*\*bits - 1|8 to 16 bits"),
}
_CHECKED_NAMES = {
    "exposure_times": "times",
    "listed_times": "times",
    "bit_depth": "bit depth",
}
_RULE_FUNCTIONS = {"check_exposure_times", "check_bit_depth", "image_codes"}


def _text(node: ast.AST, names: dict[str, str]) -> str:
    r"""The literal text of a message: f-string fields as ``{}``, or the string a field's
    variable holds (``names``: the string parameter defaults and assignments in scope).
    """
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_text(v, names) for v in node.values)
    if isinstance(node, ast.FormattedValue):
        value = node.value
        return names.get(value.id, "{}") if isinstance(value, ast.Name) else "{}"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text(node.left, names) + _text(node.right, names)
    return ""


def _string_names(node: ast.AST) -> dict[str, str]:
    r"""Variables of a function bound to a string: parameter defaults, ``x = "..."``."""
    names = {}
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = node.args
        positional = [*args.posonlyargs, *args.args]
        pairs = [
            *zip(
                positional[len(positional) - len(args.defaults) :],
                args.defaults,
                strict=True,
            ),
            *zip(args.kwonlyargs, args.kw_defaults, strict=True),
        ]
        for arg, default in pairs:
            if isinstance(default, ast.Constant) and isinstance(default.value, str):
                names[arg.arg] = default.value
    for sub in ast.walk(node):
        if (
            isinstance(sub, ast.Assign)
            and len(sub.targets) == 1
            and isinstance(sub.targets[0], ast.Name)
            and isinstance(sub.value, ast.Constant)
            and isinstance(sub.value.value, str)
        ):
            names[sub.targets[0].id] = sub.value.value
    return names


def _is_uint8(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "uint8"


def _is_code_scale(node: ast.AST) -> bool:
    r"""``2**b - 1`` (also inside a call such as ``np.float32(...)``), 255 or 65535."""
    if isinstance(node, ast.Call) and len(node.args) == 1:
        node = node.args[0]
    if isinstance(node, ast.Constant):
        return node.value in (255, 255.0, 65535, 65535.0)
    return (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Sub)
        and isinstance(node.left, ast.BinOp)
        and isinstance(node.left.op, ast.Pow)
        and isinstance(node.left.left, ast.Constant)
        and node.left.left.value == 2
    )


class _Scanner(ast.NodeVisitor):
    def __init__(self) -> None:
        self.scope: list[str] = []
        self.names: list[dict[str, str]] = [{}]
        self.marks: set[tuple[str, str]] = set()

    def _mark(self, rule: str) -> None:
        self.marks.add((".".join(self.scope) or "<module>", rule))

    def _scoped(self, node: ast.AST) -> None:
        self.scope.append(node.name)
        self.names.append({**self.names[-1], **_string_names(node)})
        self.generic_visit(node)
        self.names.pop()
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def visit_Raise(self, node: ast.Raise) -> None:
        if isinstance(node.exc, ast.Call) and node.exc.args:
            message = _text(node.exc.args[0], self.names[-1])
            for rule, pattern in _MESSAGES.items():
                if pattern.search(message):
                    self._mark(rule)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name.lstrip("_").startswith("check") and name not in _RULE_FUNCTIONS:
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                value = (
                    self.names[-1].get(arg.id) if isinstance(arg, ast.Name) else None
                )
                if isinstance(arg, ast.Constant):
                    value = arg.value
                if value in _CHECKED_NAMES:
                    self._mark(_CHECKED_NAMES[value])
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        sides = [node.left, *node.comparators]
        elements = [e for s in sides for e in getattr(s, "elts", [s])]
        if any(_is_uint8(e) for e in elements):
            self._mark("codes")
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if (
            isinstance(node.op, ast.Div)
            and not isinstance(node.left, ast.Constant)
            and _is_code_scale(node.right)
        ):
            self._mark("codes")
        self.generic_visit(node)


def rule_marks() -> set[tuple[str, str, str]]:
    r"""Every ``(module path, enclosing function, rule)`` of the package with a rule's mark."""
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        scanner = _Scanner()
        scanner.visit(ast.parse(path.read_text(encoding="utf-8"), filename=rel))
        found |= {(rel, where, rule) for where, rule in scanner.marks}
    return found


def test_each_rule_is_raised_in_bracket_only():
    found = rule_marks()
    outside = {m for m in found if m[0] != HOME}
    copies = sorted(outside - ALLOWED - PENDING)
    stale = sorted((ALLOWED | PENDING) - outside)
    assert not copies, (
        "A rule of deepinv_icrf/bracket.py written again (call check_exposure_times, "
        f"check_bit_depth or image_codes/codes_to_unit instead): {copies}"
    )
    assert not stale, f"ALLOWED/PENDING entries that match nothing any more: {stale}"


def test_the_scan_sees_the_rules_at_home():
    home = {(where, rule) for path, where, rule in rule_marks() if path == HOME}
    assert {
        ("check_exposure_times", "times"),
        ("check_bit_depth", "bit depth"),
        ("image_codes", "codes"),
        ("codes_to_unit", "codes"),
    } <= home


def test_the_scan_sees_copies():
    source = (
        "def f(t, bit_depth, images):\n"
        "    check_positive(t, 'exposure_times')\n"
        "    if images.dtype in (np.uint8, np.uint16):\n"
        "        x = images.astype(np.float32) / (2**bits - 1)\n"
        "    raise TypeError(f'Expected `bit_depth` to be an int, got {bit_depth}')\n"
        "def g(images):\n"
        "    return images / 255.0, 1.0 / (2**bits - 1)\n"
    )
    scanner = _Scanner()
    scanner.visit(ast.parse(source))
    assert scanner.marks == {
        ("f", "times"),
        ("f", "codes"),
        ("f", "bit depth"),
        ("g", "codes"),
    }


# ---------------------------------------------------------------- one behaviour everywhere
def _stack(n: int = 3) -> torch.Tensor:
    return torch.linspace(0.1, 0.9, n * 3 * 5 * 7).reshape(1, n, 3, 5, 7)


def _times_entry_points() -> dict[str, Callable[[object], object]]:
    from deepinv_icrf import fit_icrf
    from deepinv_icrf.data import align_exposures
    from deepinv_icrf.functional import (
        build_linearity_histogram,
        check_exposure_ratios,
        consistent_exposures,
        exposure_pairs,
        radiometric_linearity,
        stack_prediction_error,
        weighted_radiance_merge,
        weighted_radiance_merge_codes,
        weighted_radiance_merge_std,
    )
    from deepinv_icrf.hdr import merge_hdr
    from deepinv_icrf.models import ICRF
    from deepinv_icrf.physics import ExposureStack

    y = _stack()
    codes = torch.full((1, 3, 3, 5, 7), 100, dtype=torch.uint8)
    table = torch.linspace(0, 1, 256).view(1, 256)
    ones = torch.ones(1, 3, 3, 5, 7, dtype=torch.bool)
    return {
        "ExposureStack": lambda t: ExposureStack(t),
        "ExposureStack.update": lambda t: ExposureStack([1.0, 2.0, 4.0]).update(
            exposure_times=t
        ),
        "exposure_pairs": lambda t: exposure_pairs(t),
        "radiometric_linearity": lambda t: radiometric_linearity(y, y, t),
        "build_linearity_histogram": lambda t: build_linearity_histogram(
            torch.round(y * 255) / 255, t
        ),
        "weighted_radiance_merge": lambda t: weighted_radiance_merge(y, y, t),
        "weighted_radiance_merge_std": lambda t: weighted_radiance_merge_std(y, y, t),
        "weighted_radiance_merge_codes": lambda t: weighted_radiance_merge_codes(
            codes, t, table
        ),
        "consistent_exposures": lambda t: consistent_exposures(y, y, ones, t),
        "stack_prediction_error": lambda t: stack_prediction_error(y[:, 0], y, t),
        "check_exposure_ratios": lambda t: check_exposure_ratios(
            torch.zeros(2), torch.ones(2), t
        ),
        "merge_hdr": lambda t: merge_hdr(y[0], t, ICRF()),
        "align_exposures": lambda t: align_exposures(y[0], exposure_times=t),
        "fit_icrf": lambda t: fit_icrf(y[0], t, steps=1, progress=False),
    }


@pytest.mark.parametrize(
    ("times", "error", "message"),
    [
        ([1.0, 0.0, 2.0], ValueError, "to be > 0 everywhere, but got minimum 0: "),
        ([1.0, -2.0, 4.0], ValueError, "to be > 0 everywhere, but got minimum -2: "),
        ([1.0, float("nan"), 2.0], ValueError, "to be finite, but it holds 1 NaN"),
        (["1", "x", "2"], TypeError, "to be a sequence of numbers or a tensor"),
        (torch.tensor([True, True, False]), TypeError, "to hold real numbers"),
    ],
)
def test_bad_times_get_one_answer_everywhere(times, error, message):
    for name, call in _times_entry_points().items():
        numbers = isinstance(times, list) and isinstance(times[0], float)
        for value in (times, torch.tensor(times)) if numbers else (times,):
            with pytest.raises(error, match=re.escape(message)) as info:
                call(value)
            assert "_times`" in str(info.value), name


def test_times_of_the_wrong_length_get_one_answer_everywhere():
    for name, call in _times_entry_points().items():
        if name in (
            "ExposureStack",
            "ExposureStack.update",
            "exposure_pairs",
            "check_exposure_ratios",
        ):
            continue  # the times set N
        with pytest.raises(ValueError, match=r"_times` to have shape \(3,\)") as info:
            call(torch.tensor([1.0, 2.0]))
        assert "exposures" in str(info.value), name


def test_repeated_times_refused_by_fits_and_merges_of_brackets_only():
    from deepinv_icrf import fit_icrf
    from deepinv_icrf.functional import weighted_radiance_merge
    from deepinv_icrf.hdr import merge_hdr
    from deepinv_icrf.models import ICRF
    from deepinv_icrf.physics import ExposureStack

    t = torch.tensor([1.0, 1.0, 2.0])
    y = _stack()
    message = re.escape("Expected distinct `exposure_times`, but got [1.0, 1.0, 2.0]")
    for call in (
        lambda: fit_icrf(y[0], t, steps=1, progress=False),
        lambda: merge_hdr(y[0], t, ICRF()),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    # repeated frames are valid measurements for the physics and the tensor functions
    assert ExposureStack(t).exposure_times.tolist() == [1.0, 1.0, 2.0]
    merged = weighted_radiance_merge(y, y, t)
    assert merged.shape == (1, 3, 5, 7) and bool(torch.isfinite(merged).all())


def _bit_depth_entry_points() -> dict[str, Callable[[object], object]]:
    from deepinv_icrf.data import SyntheticExposureStackDataset
    from deepinv_icrf.functional import (
        build_linearity_histogram,
        code_values,
        curve_rmse,
        interp_curve,
        quantize_to_bit_depth,
    )
    from deepinv_icrf.loss import CodeDomainLoss, RadiometricLinearityLoss
    from deepinv_icrf.models import ICRF
    from deepinv_icrf.physics import BitDepthQuantizer, ExposureStack

    curve = torch.linspace(0, 1, 8).view(1, 8)
    y = torch.round(_stack() * 255) / 255
    t = torch.tensor([1.0, 2.0, 4.0])
    return {
        "ICRF": lambda b: ICRF(bit_depth=b),
        "ExposureStack": lambda b: ExposureStack(t, bit_depth=b),
        "BitDepthQuantizer": lambda b: BitDepthQuantizer(b),
        "CodeDomainLoss": lambda b: CodeDomainLoss(bit_depth=b),
        "RadiometricLinearityLoss": lambda b: RadiometricLinearityLoss(bit_depth=b),
        "build_linearity_histogram": lambda b: build_linearity_histogram(
            y, t, bit_depth=b
        ),
        "interp_curve": lambda b: interp_curve(torch.rand(5), curve, bit_depth=b),
        "code_values": lambda b: code_values(b),
        "quantize_to_bit_depth": lambda b: quantize_to_bit_depth(torch.rand(4), b),
        "curve_rmse": lambda b: curve_rmse(curve, curve, bit_depth=b),
        "SyntheticExposureStackDataset": lambda b: SyntheticExposureStackDataset(
            bit_depth=b
        ),
    }


@pytest.mark.parametrize(
    ("bits", "error", "message"),
    [
        (8.0, TypeError, "Expected `bit_depth` to be an int"),
        ("8", TypeError, "Expected `bit_depth` to be an int"),
        (True, TypeError, "Expected `bit_depth` to be an int"),
        (0, ValueError, "Expected `bit_depth` to be "),
        (40, ValueError, "Expected `bit_depth` to be "),
    ],
)
def test_bad_bit_depths_get_one_answer_everywhere(bits, error, message):
    for name, call in _bit_depth_entry_points().items():
        with pytest.raises(error, match=re.escape(message)) as info:
            call(bits)
        assert f"but got {bits!r}." in str(info.value) or (
            f"but got {int(bits)}." in str(info.value)
        ), name


def test_bit_depth_rule_values():
    from deepinv_icrf.bracket import check_bit_depth

    assert (
        check_bit_depth(np.int64(12)) == 12
        and type(check_bit_depth(np.int64(12))) is int
    )
    assert check_bit_depth(None) is None
    with pytest.raises(
        TypeError, match=r"^Expected `bits` to be an int, but got None\.$"
    ):
        check_bit_depth(None, "bits", optional=False)
    with pytest.raises(
        ValueError, match=r"^Expected `bit_depth` to be in \[1, 24\], but got 25\.$"
    ):
        check_bit_depth(25, optional=False, high=24)
    with pytest.raises(
        ValueError,
        match=r"^Expected `bit_depth` to be one of \(8, 16\) or None, but got 12",
    ):
        check_bit_depth(12, allowed=(8, 16))


def test_images_become_codes_the_same_way_everywhere(tmp_path):
    from deepinv_icrf.bracket import as_stack_tensor
    from deepinv_icrf.data import read_exposure_folder, write_synthetic_folder
    from deepinv_icrf.hdr import linearize
    from deepinv_icrf.models import ICRF
    from deepinv_icrf.validate import measure_curve_from_pairs

    codes16 = np.array([0, 1, 32768, 65535], dtype=np.uint16).reshape(2, 1, 2, 1)
    y, bits = as_stack_tensor(codes16)
    assert bits == 16
    assert y.flatten().tolist() == pytest.approx([0.0, 1 / 65535, 32768 / 65535, 1.0])
    # the identity ICRF on 16 bits gives the same values back through hdr.linearize
    identity = ICRF(channels=1, n_points=65536, init="identity", bit_depth=16)
    x = linearize(codes16, identity)
    np.testing.assert_allclose(x.ravel(), y.flatten().numpy(), rtol=0, atol=1e-7)
    folder = read_exposure_folder(write_synthetic_folder(tmp_path, n_exposures=2))
    expected = folder.images.astype(np.float32) / 255
    np.testing.assert_array_equal(
        folder.to_tensor().permute(0, 2, 3, 1).numpy(), expected
    )
    bad = np.zeros((2, 4, 5, 3), dtype=np.int32)
    message = "as uint8/uint16 codes or "
    for call in (
        lambda: as_stack_tensor(bad),
        lambda: linearize(bad, ICRF()),
        lambda: measure_curve_from_pairs(bad[0], bad[0]),
    ):
        with pytest.raises(TypeError, match=re.escape(message)):
            call()
