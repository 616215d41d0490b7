"""Writes samples/northwind-annual-report-2025.md: a fictional annual report written
for this project (no real company; free to use), about 120 KB, with a few facts
that a question can only be answered by finding.

The text is generated deterministically (seeded), so the file is reproducible:
    python scripts/make_sample.py
"""

from __future__ import annotations

import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "samples" / "northwind-annual-report-2025.md"

REGIONS = ["Pacific Northwest", "Great Lakes", "Gulf Coast", "Mid-Atlantic", "Rocky Mountain", "New England",
           "Southeast", "Upper Midwest"]
SEGMENTS = ["Cold Chain", "Freight Brokerage", "Warehousing", "Last-Mile Delivery"]
QUARTERS = ["first", "second", "third", "fourth"]
RISKS = [
    ("Fuel prices", "Diesel is our largest variable cost after labour. A sustained rise of ten cents per gallon "
     "would reduce operating income by roughly {n} million dollars before surcharges recover it."),
    ("Labour availability", "We compete for drivers, dock workers and technicians with every carrier in our regions. "
     "Turnover among drivers averaged {p} percent during the year."),
    ("Customer concentration", "Our ten largest customers accounted for {p} percent of revenue. The loss of any of "
     "them could materially affect our results."),
    ("Information systems", "Our dispatch, warehouse-management and billing systems are integrated. An outage of "
     "more than {n} hours would delay shipments and invoices."),
    ("Weather", "Storms, floods and extreme heat interrupt routes and raise refrigeration loads. We lost an estimated "
     "{n} operating days across the network to weather this year."),
    ("Regulation", "Changes to hours-of-service rules, emissions standards or cold-storage food-safety rules could "
     "raise our costs. We spent {n} million dollars on compliance programs."),
    ("Interest rates", "Part of our debt bears floating rates. A rise of one percentage point would add about "
     "{n} million dollars to annual interest expense."),
    ("Cybersecurity", "We detected and contained {n} attempted intrusions during the year; none resulted in a loss "
     "of customer data."),
]
FILLER = [
    "Management reviews these figures monthly with the operating leaders of each region.",
    "The comparison excludes facilities acquired or closed during either period.",
    "Seasonal demand peaks in the fourth quarter, when retail and holiday food shipments rise.",
    "We continue to invest in route-planning software to reduce empty miles.",
    "Customer retention remained above our internal target for the period.",
    "These amounts are unaudited and presented for comparison only.",
    "The board's audit committee reviewed the methodology used for these estimates.",
    "Volumes were affected by customer inventory reductions early in the year.",
    "We expect capital spending in this area to remain at a similar level next year.",
    "Pricing actions taken in the prior year carried into the current period.",
]


def money(x: float) -> str:
    return f"${x:,.1f} million"


def paragraph(rng: random.Random, lead: str, k: int = 3) -> str:
    return lead + " " + " ".join(rng.sample(FILLER, k))


def build() -> str:
    rng = random.Random(2025)
    out: list[str] = []
    out.append("# Northwind Harbor Logistics, Inc. — Annual Report for Fiscal Year 2025\n")
    out.append("*A fictional company. This report was written as sample data for minionflow; any resemblance to a "
               "real company is coincidental. It may be copied and modified freely.*\n")
    out.append("## Part I\n\n## Item 1. Business\n")
    out.append(
        "Northwind Harbor Logistics, Inc. (\"Northwind\", \"we\") moves and stores goods for food producers, "
        "retailers and manufacturers across eight regions of the United States. We operate four segments: Cold "
        "Chain, Freight Brokerage, Warehousing and Last-Mile Delivery. Our headquarters are in Tacoma, Washington. "
        "The company was founded in 1987 by Margaret Ellison as a single refrigerated warehouse on the Tacoma "
        "tideflats. Our fiscal year ends on September 30.\n"
    )
    for seg in SEGMENTS:
        out.append(f"### {seg}\n")
        for _ in range(4):
            out.append(paragraph(rng, f"The {seg} segment serves {rng.randint(120, 900)} customers from "
                                      f"{rng.randint(6, 40)} sites and employed {rng.randint(400, 3000):,} people at year end.", 4) + "\n")
    out.append("### Employees\n")
    out.append("At September 30, 2025 we employed 11,482 people, of whom 4,906 were drivers. About 18 percent of our "
               "employees are covered by collective bargaining agreements. " + " ".join(rng.sample(FILLER, 3)) + "\n")
    out.append("## Item 1A. Risk Factors\n")
    for title, text in RISKS:
        out.append(f"### {title}\n")
        for _ in range(3):
            out.append(paragraph(rng, text.format(n=rng.randint(2, 40), p=rng.randint(11, 48)), 5) + "\n")
    out.append("## Item 2. Properties\n")
    for region in REGIONS:
        out.append(f"### {region}\n")
        for _ in range(3):
            out.append(paragraph(rng, f"In the {region} region we operate {rng.randint(3, 14)} facilities with "
                                      f"{rng.randint(200, 2400):,} thousand square feet of space, of which "
                                      f"{rng.randint(20, 80)} percent is temperature controlled.", 5) + "\n")
    out.append("## Item 3. Legal Proceedings\n")
    out.append(paragraph(rng, "We are party to ordinary claims arising from vehicle accidents, cargo loss and "
                              "employment matters. None is expected to have a material effect.", 3) + "\n")
    out.append("## Part II\n\n## Item 7. Management's Discussion and Analysis\n")
    totals = {}
    for seg in SEGMENTS:
        out.append(f"### Results of the {seg} segment\n")
        year_total = 0.0
        for q in QUARTERS:
            rev = round(rng.uniform(80, 260), 1)
            year_total += rev
            margin = rng.randint(4, 17)
            out.append(paragraph(rng, f"In the {q} quarter, {seg} revenue was {money(rev)} and the operating margin "
                                      f"was {margin} percent.", 5) + "\n")
            for region in rng.sample(REGIONS, 3):
                out.append(paragraph(rng, f"{seg} volumes in the {region} region "
                                          f"{rng.choice(['rose', 'fell', 'were flat'])} by {rng.randint(1, 12)} percent "
                                          f"in the {q} quarter.", 4) + "\n")
        totals[seg] = round(year_total, 1)
        out.append(f"For the full year, {seg} revenue was {money(totals[seg])}.\n")
    total = round(sum(totals.values()), 1)
    out.append("### Consolidated results\n")
    out.append(f"Total revenue for fiscal 2025 was {money(total)}. " + " ".join(rng.sample(FILLER, 4)) + "\n")
    out.append("### Facility closure\n")
    out.append(
        "On June 14, 2025 we closed the Duluth cold-storage facility in the Upper Midwest region after its "
        "ammonia refrigeration system failed an inspection and the cost of replacing it, estimated at $31.5 million, "
        "exceeded the value of the site. Its 142 employees were offered positions at our Minneapolis facility. "
        "We recorded an impairment charge of $12.8 million in the third quarter.\n"
    )
    for _ in range(40):
        region = rng.choice(REGIONS)
        out.append(paragraph(rng, f"Operating expenses in the {region} region were "
                                  f"{money(rng.uniform(10, 90))} in fiscal 2025 compared with "
                                  f"{money(rng.uniform(10, 90))} in fiscal 2024.", 6) + "\n")
    out.append("### Liquidity and capital resources\n")
    for _ in range(20):
        out.append(paragraph(rng, f"Capital expenditures on {rng.choice(['trucks', 'trailers', 'racking', 'refrigeration', 'software', 'dock doors'])} "
                                  f"were {money(rng.uniform(1, 40))}.", 6) + "\n")
    out.append("## Item 8. Financial Statements and Supplementary Data\n")
    out.append("| Segment | Fiscal 2025 revenue |\n|---|---|\n" + "".join(f"| {s} | {money(v)} |\n" for s, v in totals.items())
               + f"| Total | {money(total)} |\n")
    for i in range(1, 29):
        out.append(f"### Note {i}\n")
        out.append(paragraph(rng, f"This note describes accounting policy number {i}, applied consistently with "
                                  f"the prior year.", 7) + "\n")
    out.append("## Item 9. Controls and Procedures\n")
    out.append(paragraph(rng, "Our chief executive officer, Daniel Okafor, and our chief financial officer, "
                              "Priya Raman, concluded that our disclosure controls were effective.", 3) + "\n")
    return "\n".join(out)


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(build(), encoding="utf-8")
    print(f"{OUT} ({OUT.stat().st_size:,} bytes)")
