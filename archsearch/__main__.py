"""``python -m archsearch``: train one ``model=`` or, with ``+sweep=NAME``, run a search (see cli.main)."""

if __name__ == "__main__":
    from archsearch.cli.main import main

    main()
