"""``python -m archsearch.finalize``: the command's entry point (see :mod:`archsearch.cli.finalize`)."""

if __name__ == "__main__":
    from archsearch.cli.finalize import main

    main()
