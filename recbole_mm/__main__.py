"""``python -m recbole_mm --model=ANT ...``: the command line of an installed package, the same as
``run_recbole_mm.py`` in a checkout (and the ``recbole-mm`` console script)."""

from recbole_mm.cli import main


def console() -> int:
    """Console-script entry: ``main`` returns the result dict, which must not become the exit status
    (an input error exits with status 2 from ``main``)."""
    main()
    return 0


if __name__ == "__main__":
    console()
