"""Where the compiled extensions are built, and that a built one loads without building again: the
build folder is named after a digest of the sources, so ``auto`` (which takes an extension only when
it is built) never starts a compiler, whichever checkout of the same sources asks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from wan_kernels import dispatch, native

ROOT = Path(__file__).resolve().parents[2]


def _checkout(root: Path) -> Path:
    """A copy of ``csrc/`` as another checkout of the same sources holds it."""
    shutil.copytree(native.SOURCE_DIR, root / "csrc")
    return root / "csrc"


@pytest.mark.parametrize("ext", [native.CPP, native.CUDA], ids=["cpp", "cuda"])
def test_the_build_folder_follows_the_sources_not_the_checkout(ext, tmp_path, monkeypatch):
    here = native.build_dir(ext)
    monkeypatch.setattr(native, "SOURCE_DIR", _checkout(tmp_path / "other"))
    assert native.build_dir(ext) == here
    header = native.SOURCE_DIR / ("cuda/common.cuh" if ext.cuda else "rows.h")
    header.write_text(header.read_text() + "\n// changed\n")
    changed = native.build_dir(ext)
    assert changed != here and changed.parent == here.parent and changed.name.startswith(ext.name + "-")


def test_a_build_folder_per_flags():
    assert native.CPP.digest() != native.Extension(**{**vars(native.CPP), "cflags": ("-O2",)}).digest()


@pytest.mark.parametrize("ext, variable", [(native.CPP, "CXX"), (native.CUDA, "CXX"),
                                           (native.CUDA, "TORCH_CUDA_ARCH_LIST")])
def test_a_build_folder_per_compiler_and_gpu_architectures(ext, variable, monkeypatch):
    """The build's settings from the environment count too: a library built for an H100 must not be
    loaded for another GPU from a shared cache, where it has no kernel image."""
    monkeypatch.delenv(variable, raising=False)
    here = native.build_dir(ext)
    monkeypatch.setenv(variable, "8.0" if variable == "TORCH_CUDA_ARCH_LIST" else "/opt/other/g++")
    assert native.build_dir(ext) != here


@pytest.fixture
def build_root(tmp_path, monkeypatch):
    """An empty build folder for the extensions, and lookups that forget what they found."""
    monkeypatch.setenv(native.BUILD_DIR_VAR, str(tmp_path))
    native.is_built.cache_clear()
    native.other_builds.cache_clear()
    dispatch._warned_builds.clear()
    yield tmp_path
    native.is_built.cache_clear()
    native.other_builds.cache_clear()
    dispatch._warned_builds.clear()


def _library_without_mark(ext: native.Extension, folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / f"{ext.name}.so").write_bytes(b"\x7fELF")
    return folder


def test_a_library_still_linking_is_not_built(build_root):
    """Another process's build writes the library in place; only its mark makes it complete."""
    if native._prebuilt(native.CPP):
        pytest.skip("the C++ extension is installed prebuilt")
    folder = _library_without_mark(native.CPP, native.build_dir(native.CPP))
    assert not native.is_built(native.CPP)
    (folder / native._COMPLETE).touch()
    native.is_built.cache_clear()
    assert native.is_built(native.CPP)


def test_auto_passes_over_a_build_of_other_sources_aloud(build_root):
    if native._prebuilt(native.CPP):
        pytest.skip("the C++ extension is installed prebuilt")
    older = native.build_dir(native.CPP).with_name(f"{native.CPP.name}-0123456789abcdef")
    (_library_without_mark(native.CPP, older) / native._COMPLETE).touch()
    message = re.escape(f"build in {older} is of other sources or build settings")
    with pytest.warns(UserWarning, match=message):
        assert "cpp" not in dispatch.available_backends()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "cpp" not in dispatch.available_backends()


# A fresh process whose compiler must not run: the extension, built from the same sources in another
# checkout, is found by is_built and loaded as it is.
LOAD_WITHOUT_BUILDING = """
import sys
from pathlib import Path
from torch.utils import cpp_extension
from wan_kernels import dispatch, native

def refuse(*args, **kwargs):
    raise AssertionError("cpp_extension.load ran")

cpp_extension.load = refuse
native.SOURCE_DIR = Path(sys.argv[1])
assert native.is_built(native.CPP)
assert "cpp" in dispatch.available_backends()
import torch, wan_kernels
x = torch.ones(1, 2, 3)
assert wan_kernels.backend_for(x.device) == "cpp"
assert torch.equal(wan_kernels.residual_apply(x, x), 2 * x)
print("loaded", native.build_dir(native.CPP).name)
"""


def test_a_built_extension_loads_without_building_from_any_checkout(tmp_path):
    if not native.load(native.CPP):
        pytest.skip("the C++ extension does not build here")
    if native._prebuilt(native.CPP):
        pytest.skip("the C++ extension is installed prebuilt")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("WAN_KERNELS_BACKEND", None)
    done = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_BUILDING, str(_checkout(tmp_path))], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["loaded", native.build_dir(native.CPP).name]


def test_a_prebuilt_module_that_does_not_load_is_passed_over_aloud(tmp_path, monkeypatch):
    """setup.py's module built for an earlier torch (an ABI it no longer has): a warning and the
    other backends, not an error out of every op call."""
    broken = tmp_path / "_cpp.so"
    broken.write_bytes(b"not a library")
    monkeypatch.setattr(native, "_installed", lambda ext: str(broken))
    message = f"loaded from {re.escape(str(broken))} \\(OSError: .*Rebuild it for this torch"
    with pytest.warns(UserWarning, match=message):
        assert not native.load.__wrapped__(native.CPP)


def test_a_prebuilt_module_older_than_the_sources_beside_it_is_passed_over_aloud(build_root, tmp_path,
                                                                                monkeypatch):
    """An editable install's module after a ``git pull`` changed ``csrc/``: of other sources, like an
    older just-in-time build, so ``auto`` does not take it and says so."""
    older = tmp_path / "_cpp.so"
    older.write_bytes(b"\x7fELF")
    os.utime(older, (0, 0))
    monkeypatch.setattr(native, "_installed", lambda ext: str(older) if ext is native.CPP else None)
    assert native._prebuilt(native.CPP) is None and not native.is_built(native.CPP)
    with pytest.warns(UserWarning, match=re.escape(f"build in {older} is of other sources")):
        assert "cpp" not in dispatch.available_backends()
    os.utime(older)
    native.is_built.cache_clear()
    assert native._prebuilt(native.CPP) == str(older) and native.is_built(native.CPP)


def test_a_compiler_that_does_not_run_is_a_warning_not_an_error(build_root, monkeypatch, capsys):
    """torch's compiler check runs ``$CXX --version`` and raises CalledProcessError where it fails;
    the build was announced first, as a first build runs a minute or more."""
    if native._prebuilt(native.CPP):
        pytest.skip("the C++ extension is installed prebuilt")
    monkeypatch.setenv("CXX", "/bin/false")
    monkeypatch.setattr(native, "_FAILURES", {})
    with pytest.warns(UserWarning, match="loaded in .*CalledProcessError.*It needs a C"):
        assert not native.load.__wrapped__(native.CPP)
    told = f"wan_kernels: building the {native.CPP.label} kernels once, into {native.build_dir(native.CPP)}\n"
    assert capsys.readouterr().err == told
    # set_backend's error says why, when the warning (given once) may be long gone.
    folder = re.escape(str(native.build_dir(native.CPP)))
    assert re.fullmatch(f"; it could not be built or loaded in {folder} "
                        r"\(CalledProcessError: .*\); It needs a C\+\+ compiler.*",
                        dispatch._unavailable_reason("cpp"))


def test_an_install_without_the_sources_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(native, "SOURCE_DIR", tmp_path / "csrc")
    monkeypatch.setattr(native, "_installed", lambda ext: None)
    monkeypatch.setattr(native, "_FAILURES", {})
    assert not native.load.__wrapped__(native.CPP)
    assert dispatch._unavailable_reason("cpp") == (
        f"; this install holds neither its sources ({tmp_path / 'csrc'}) nor a prebuilt module: reinstall "
        "wan-runtime, whose wheel carries them")
