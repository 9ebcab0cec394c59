"""The metric catalogue's own rules, checked without a scrape."""

from celery_exporter.exposition.catalogue import CATALOGUE

# A HELP line is read in a terminal and by promtool; the reliability tier bounds every line of
# a scrape at 200 characters, so a HELP text must leave room for `# HELP <name> `.
LONGEST_LINE = 200


def test_every_help_line_fits_the_scrape_line_bound() -> None:
    long = {
        spec.exposed_name("celery_"): len(f"# HELP {spec.exposed_name('celery_')} {spec.help}")
        for spec in CATALOGUE
    }
    assert {name: n for name, n in long.items() if n >= LONGEST_LINE} == {}
