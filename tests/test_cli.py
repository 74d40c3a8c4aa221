"""The ``vaequery`` command: the demo answers its queries and writes its PNGs."""

from vaequery.cli import main


def test_demo_writes_pngs(tmp_path, capsys):
    # --no-cache: the test process's JAX config must stay as the suite set it
    assert main(["--no-cache", "demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("breast_cancer_posterior.png", "digits_inpainting.png"):
        assert (tmp_path / name).stat().st_size > 10_000
        assert name in out
    assert "quality" in out and "density" in out and "worst_area" in out
