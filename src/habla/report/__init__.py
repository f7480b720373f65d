"""The evaluation report: a self-contained offline HTML page, and Markdown summaries.

`html.write_report` builds `reports/index.html` (audio players, mel images, training curves,
data card); `compare` prints the pull-request summary (`habla report --compare REV`) and the
headline figures (`habla report --summary`). `png` and `svg` draw images without plotting deps.
"""
