"""``python -m archsearch.calibrate``: the command's entry point (see :mod:`archsearch.cli.calibrate`)."""

if __name__ == "__main__":
    from archsearch.cli.calibrate import main

    main()
