"""What a reader sees: ``figures``, ``montage`` and ``htmlpage`` (the pieces), ``report`` (a
run's page, a list of sections, and the comparison's), ``atlas`` and ``atlas_links`` (every
unit's page and its partners in other runs), ``comparison`` and ``aggregate`` (runs side by
side, from MLflow).

May import: every other phase. The top layer.
"""
