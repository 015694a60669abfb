"""What a reader sees: ``figures``, ``montage`` and ``htmlpage`` (the pieces), ``report`` (a
run's page, a list of sections), ``atlas`` and ``atlas_links`` (every unit's page and its
partners in other runs), ``comparison``, ``comparison_report`` and ``aggregate`` (runs side by
side, from MLflow: which runs, their page, means over seeds).

May import: every other phase. The top layer.
"""
