"""`python -m ldm serve`'s flags: each bad one refused in one line (exit 2) before a model loads or
a port is bound; a missing [serve] extra says how to install it; --listen warns. The command line's
main in this process (tests/serve/ runs the real server)."""

from __future__ import annotations

import shutil
import sys

import pytest

from ldm.cli import main
from ldm.demo import CHECKPOINT


def serve(capsys, *args: str) -> list[str]:
    """main(["serve", *args]) -> its stderr lines, after checking it exited 2."""
    assert main(["serve", *args]) == 2
    return capsys.readouterr().err.splitlines()


def one_error_line(lines: list[str], *words: str) -> None:
    errors = [line for line in lines if line.startswith("python -m ldm serve: error: ")]
    assert len(errors) == 1, lines
    for word in words:
        assert word in errors[0], errors[0]


@pytest.mark.parametrize("args, words", [
    (["--host", "0.0.0.0"], ["--host 0.0.0.0: other machines could reach the server there; add --listen"]),
    (["--host", "192.168.1.5"], ["--host 192.168.1.5: other machines could reach"]),
    (["--port", "0"], ["--port 0: must be in 1..65535"]),
    (["--api-auth", "nocolon"], ["--api-auth: give USER:PASSWORD (both non-empty)"]),
    (["--api-auth", ":pw"], ["--api-auth: give USER:PASSWORD"]),
    (["--models-dir", "missing"], ["--models-dir missing: no such folder"]),
    (["--models-dir", "empty"], ["--models-dir empty: no .ckpt or .safetensors file in it"]),
    (["--models-dir", "models", "--variant", "v1"], ["--variant with --models-dir: each file's variant is detected"]),
    (["--models-dir", "models", "--ckpt", "other.safetensors"],
     ["--ckpt other.safetensors: no model 'other.safetensors' here; models: ['demo.safetensors']"]),
    (["--ckpt", "missing.ckpt"], ["--ckpt missing.ckpt: no such checkpoint file or folder"]),
    (["--outdir", "taken"], ["--outdir taken: a file is in the way"]),
], ids=["any-host", "lan-host", "port", "auth-colon", "auth-user", "missing-dir", "empty-dir", "dir-variant",
        "dir-ckpt", "missing-ckpt", "outdir-file"])
def test_a_bad_serve_flag_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, words):
    (tmp_path / "empty").mkdir()
    (tmp_path / "models").mkdir()
    shutil.copy(CHECKPOINT, tmp_path / "models" / "demo.safetensors")
    (tmp_path / "taken").write_text("a file")
    monkeypatch.chdir(tmp_path)
    one_error_line(serve(capsys, *args), *words)


def test_without_the_serve_extra_it_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what `import uvicorn` meets when it is not installed
    one_error_line(serve(capsys), "serve needs FastAPI and uvicorn (uvicorn is missing): pip install -e \".[serve]\"")


def test_listen_warns_that_other_machines_can_reach_it(capsys):
    """--listen with a bad --api-auth: the warning comes, then the refusal (nothing is bound)."""
    lines = serve(capsys, "--listen", "--api-auth", "x")
    assert "python -m ldm serve: warning: listening on 0.0.0.0: other machines can reach this server" in lines
    one_error_line(lines, "--api-auth: give USER:PASSWORD")
