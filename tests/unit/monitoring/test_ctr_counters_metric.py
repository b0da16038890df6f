"""``streamrec_ctr_impressions_total`` / ``_clicks_total``: the join counters, bounded labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitoring.metrics import CtrCountersCollector
from schemas.metrics import CTR_CLICKS, CTR_IMPRESSIONS

Samples = dict[tuple[str, str, str], float]


def scrape(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "counter", family.name
        for s in family.samples:
            out[(s.name, s.labels["surface"], s.labels["variant"])] = s.value
    return out


def test_counters_are_the_hash_values_by_surface_and_variant() -> None:
    registry = CollectorRegistry()
    ctr = CtrCountersCollector(("home", "pdp"), registry)
    assert scrape(registry) == {}  # no reading yet: the families exist, without series
    ctr.publish(
        {
            "home|A|imp": 1000,
            "home|A|clk": 31,
            "home|A|req": 100,  # requests and positions are not exported
            "home|A|pos": 77,
            "pdp|B|imp": 400,
            "join|ok": 31,  # the join totals are not a surface|variant pair
            "join|attempt": 40,
        }
    )
    assert scrape(registry) == {
        (CTR_IMPRESSIONS.name, "home", "A"): 1000.0,
        (CTR_CLICKS.name, "home", "A"): 31.0,
        (CTR_IMPRESSIONS.name, "pdp", "B"): 400.0,
    }


def test_surfaces_outside_the_list_are_summed_as_other() -> None:
    registry = CollectorRegistry()
    ctr = CtrCountersCollector(("home",), registry)
    ctr.publish({"widget|A|imp": 10, "mail|A|imp": 5, "mail|A|clk": 2, "home|A|imp": 7})
    got = scrape(registry)
    assert got[(CTR_IMPRESSIONS.name, "other", "A")] == 15.0
    assert got[(CTR_CLICKS.name, "other", "A")] == 2.0
    assert got[(CTR_IMPRESSIONS.name, "home", "A")] == 7.0


def test_variants_past_the_cap_are_other_and_admission_is_sticky() -> None:
    registry = CollectorRegistry()
    ctr = CtrCountersCollector(("home",), registry, max_variants=2)
    # busiest variants are admitted first: C and A; B goes to other
    ctr.publish({"home|A|imp": 50, "home|B|imp": 10, "home|C|imp": 90, "home|B|clk": 1})
    first = scrape(registry)
    assert set(first) == {
        (CTR_IMPRESSIONS.name, "home", "A"),
        (CTR_IMPRESSIONS.name, "home", "C"),
        (CTR_IMPRESSIONS.name, "home", "other"),
        (CTR_CLICKS.name, "home", "other"),
    }
    assert first[(CTR_IMPRESSIONS.name, "home", "other")] == 10.0
    # B overtakes A later: the labelled set does not change, so every series only grows
    ctr.publish({"home|A|imp": 51, "home|B|imp": 500, "home|C|imp": 95, "home|D|imp": 3})
    second = scrape(registry)
    assert second[(CTR_IMPRESSIONS.name, "home", "A")] == 51.0
    assert second[(CTR_IMPRESSIONS.name, "home", "other")] == 503.0
    for key, value in first.items():
        if key[0] == CTR_IMPRESSIONS.name:
            assert second[key] >= value, key


def test_a_surface_or_variant_with_the_separator_keeps_the_first_split() -> None:
    """``pair_key`` joins with ``|``: the surface ends at the first one (as the monitor reads)."""
    registry = CollectorRegistry()
    ctr = CtrCountersCollector(("home",), registry)
    ctr.publish({"home|exp|B|imp": 4})
    assert scrape(registry) == {(CTR_IMPRESSIONS.name, "home", "exp|B"): 4.0}
