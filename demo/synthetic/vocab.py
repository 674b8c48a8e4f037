"""Word lists of the synthetic logistics world: cities, carriers, goods, vendors, charges.

Each list that names *who* or *where* comes in two disjoint windows: ``train`` (used by
the train and val splits) and ``test`` (the held-out split). The goods are split too: the
pretrained base already knows what a good is, so the test window asks about goods that
training never named. Pure data, stdlib only.
"""

from __future__ import annotations

from typing import NamedTuple


class City(NamedTuple):
    """A city, its ISO country code and its coordinates (road distances derive from them)."""

    name: str
    country: str
    lat: float
    lon: float


class Carrier(NamedTuple):
    """A carrier: a four-letter code, its trading name and its main mode."""

    code: str
    name: str
    mode: str


class Vendor(NamedTuple):
    """An invoicing vendor: its currency, VAT rate (percent) and invoice-number format.

    ``number_format`` is a ``str.format`` pattern over ``year`` (4 digits), ``yy`` (2 digits)
    and ``n`` (a running number).
    """

    name: str
    currency: str
    vat: int
    number_format: str


CITIES: dict[str, tuple[City, ...]] = {
    "train": (
        City("Hamburg", "DE", 53.55, 9.99),
        City("Berlin", "DE", 52.52, 13.40),
        City("Munich", "DE", 48.14, 11.58),
        City("Frankfurt", "DE", 50.11, 8.68),
        City("Cologne", "DE", 50.94, 6.96),
        City("Bremen", "DE", 53.08, 8.80),
        City("Hanover", "DE", 52.37, 9.73),
        City("Stuttgart", "DE", 48.78, 9.18),
        City("Leipzig", "DE", 51.34, 12.37),
        City("Dortmund", "DE", 51.51, 7.47),
        City("Amsterdam", "NL", 52.37, 4.90),
        City("Rotterdam", "NL", 51.92, 4.48),
        City("Antwerp", "BE", 51.22, 4.40),
        City("Brussels", "BE", 50.85, 4.35),
        City("Paris", "FR", 48.86, 2.35),
        City("Lyon", "FR", 45.76, 4.84),
        City("Marseille", "FR", 43.30, 5.37),
        City("Lille", "FR", 50.63, 3.06),
        City("Milan", "IT", 45.46, 9.19),
        City("Rome", "IT", 41.90, 12.50),
        City("Madrid", "ES", 40.42, -3.70),
        City("Barcelona", "ES", 41.39, 2.17),
        City("Valencia", "ES", 39.47, -0.38),
        City("Vienna", "AT", 48.21, 16.37),
        City("Prague", "CZ", 50.08, 14.44),
        City("Warsaw", "PL", 52.23, 21.01),
        City("Poznan", "PL", 52.41, 16.93),
        City("Zurich", "CH", 47.38, 8.54),
        City("Basel", "CH", 47.56, 7.59),
        City("Copenhagen", "DK", 55.68, 12.57),
        City("Stockholm", "SE", 59.33, 18.07),
        City("Budapest", "HU", 47.50, 19.04),
    ),
    "test": (
        City("Lisbon", "PT", 38.72, -9.14),
        City("Porto", "PT", 41.15, -8.61),
        City("Seville", "ES", 37.39, -5.98),
        City("Malaga", "ES", 36.72, -4.42),
        City("Bilbao", "ES", 43.26, -2.93),
        City("Bordeaux", "FR", 44.84, -0.58),
        City("Toulouse", "FR", 43.60, 1.44),
        City("Nantes", "FR", 47.22, -1.55),
        City("Turin", "IT", 45.07, 7.69),
        City("Genoa", "IT", 44.41, 8.93),
        City("Bologna", "IT", 44.49, 11.34),
        City("Naples", "IT", 40.85, 14.27),
        City("Gdansk", "PL", 54.35, 18.65),
        City("Krakow", "PL", 50.06, 19.94),
        City("Wroclaw", "PL", 51.11, 17.04),
        City("Bratislava", "SK", 48.15, 17.11),
        City("Ljubljana", "SI", 46.06, 14.51),
        City("Zagreb", "HR", 45.81, 15.98),
        City("Oslo", "NO", 59.91, 10.75),
        City("Gothenburg", "SE", 57.71, 11.97),
        City("Bucharest", "RO", 44.43, 26.10),
        City("Sofia", "BG", 42.70, 23.32),
    ),
}

CARRIERS: dict[str, tuple[Carrier, ...]] = {
    "train": (
        Carrier("NFRX", "Nordfracht Express", "road"),
        Carrier("RHCG", "Rhein Cargo", "road"),
        Carrier("ALPT", "Alpine Transit", "rail"),
        Carrier("BLTF", "Baltic Freight", "road"),
        Carrier("EURL", "Eurolink Rail", "rail"),
        Carrier("SKYX", "Skyway Air Cargo", "air"),
        Carrier("MRSK", "Maris Shipping", "sea"),
        Carrier("DNBE", "Danube Express", "road"),
        Carrier("FLDR", "Flanders Forwarding", "intermodal"),
        Carrier("IBCG", "Iberia Cargas", "road"),
    ),
    "test": (
        Carrier("ATCF", "Atlantic Coast Freight", "road"),
        Carrier("VSTL", "Vistula Transport", "rail"),
        Carrier("ADRH", "Adriatic Haulers", "road"),
        Carrier("FJRD", "Fjord Line Cargo", "sea"),
        Carrier("CRPT", "Carpathia Cargo", "intermodal"),
        Carrier("AERQ", "Aeroquick", "air"),
    ),
}

# Goods by category, in two disjoint windows like the places: the test window names goods
# that training never saw, so a score on it shows that the adapter learned what a category
# means (the pretrained base knows that orchids spoil and butane burns), not a word list.
# The category of a shipment is the highest-precedence category among its goods (see
# synthetic_rules.CATEGORY_PRECEDENCE). Some goods are traps on purpose: canned tomatoes
# are food but not perishable, stationery is paper but not documents, a sofa is big but
# fits a van.
GOODS: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "hazardous": (
            "lithium-ion batteries",
            "paint thinner",
            "aerosol cans",
            "compressed gas cylinders",
            "industrial solvents",
            "lighter fluid",
            "pool chlorine",
            "acetone drums",
            "consumer fireworks",
            "car batteries",
            "propane tanks",
            "epoxy resin",
            "hydrochloric acid",
            "petrol canisters",
            "bleach concentrate",
            "ammonia solution",
        ),
        "perishable": (
            "frozen shrimp",
            "fresh salmon",
            "cut flowers",
            "dairy yogurt",
            "fresh strawberries",
            "chilled meat",
            "flu vaccines",
            "live lobsters",
            "ice cream",
            "fresh herbs",
            "soft cheese",
            "bakery goods",
            "fresh milk",
            "raw chicken",
            "ripe bananas",
            "fresh mushrooms",
        ),
        "fragile": (
            "glass vases",
            "porcelain plates",
            "LCD monitors",
            "wine glasses",
            "ceramic tiles",
            "wall mirrors",
            "crystal chandeliers",
            "laboratory glassware",
            "stained glass panels",
            "camera lenses",
            "picture frames",
            "china teacups",
            "glass bottles",
            "television screens",
        ),
        "oversized": (
            "steel beams",
            "a wind turbine blade",
            "a boat hull",
            "an industrial generator",
            "tractor tires",
            "concrete pipes",
            "an excavator bucket",
            "timber logs",
            "a power transformer",
            "a shipping container",
            "rolled steel coils",
            "a combine harvester",
            "a yacht mast",
        ),
        "general": (
            "cotton t-shirts",
            "plastic toys",
            "paperback books",
            "kitchen utensils",
            "running shoes",
            "yoga mats",
            "phone cases",
            "garden tools",
            "board games",
            "canned tomatoes",
            "dry pasta",
            "bicycle parts",
            "stationery",
            "a sofa",
            "wool sweaters",
            "office chairs",
            "rice sacks",
            "leather bags",
        ),
        "documents": (
            "signed contracts",
            "passports",
            "legal papers",
            "court filings",
            "tax records",
            "academic transcripts",
            "bank statements",
            "title deeds",
            "visa applications",
            "share certificates",
        ),
    },
    "test": {
        "hazardous": (
            "butane canisters",
            "nitric acid",
            "gunpowder",
            "diesel fuel drums",
            "oxygen cylinders",
            "rat poison",
            "kerosene",
            "sulfuric acid",
        ),
        "perishable": (
            "fresh orchids",
            "raw oysters",
            "blood plasma",
            "frozen pizzas",
            "fresh tuna",
            "goat cheese",
            "live crabs",
            "fresh asparagus",
        ),
        "fragile": (
            "crystal glasses",
            "ceramic vases",
            "glass aquariums",
            "antique clocks",
            "computer monitors",
            "porcelain figurines",
            "glass tabletops",
            "glass lamps",
        ),
        "oversized": (
            "a bulldozer",
            "steel girders",
            "a ship propeller",
            "a crane boom",
            "railway sleepers",
            "a mobile home",
            "a fishing boat",
            "industrial boilers",
        ),
        "general": (
            "denim jeans",
            "plastic buckets",
            "hardcover books",
            "cooking pots",
            "sneakers",
            "canned beans",
            "flour sacks",
            "desk lamps",
            "tennis rackets",
            "a bookshelf",
        ),
        "documents": (
            "birth certificates",
            "signed leases",
            "insurance policies",
            "diplomas",
            "notarised affidavits",
            "property deeds",
        ),
    },
}

PACKAGING: tuple[str, ...] = ("boxes", "pallets", "crates", "cartons", "cases", "bags")

NOTES: tuple[str, ...] = (
    "Tail-lift required.",
    "Deliver to loading dock 4.",
    "Call the consignee 30 minutes before arrival.",
    "Pickup after 14:00.",
    "Consignee closed on Saturdays.",
    "Two-person delivery.",
    "Booking made by phone.",
    "Gate code 4471.",
    "Use the rear entrance.",
    "Proof of delivery by photo.",
    "Repeat order from last month.",
    "Invoice to head office.",
)

VENDORS: dict[str, tuple[Vendor, ...]] = {
    "train": (
        Vendor("Nordfracht Logistik GmbH", "EUR", 19, "NF-{year}-{n:05d}"),
        Vendor("Rhein Cargo AG", "EUR", 19, "RC/{yy}/{n:04d}"),
        Vendor("Baltic Freight Sp. z o.o.", "PLN", 23, "BF-{n}/{year}"),
        Vendor("Alpine Transit SA", "CHF", 8, "AT{year}{n:04d}"),
        Vendor("Thames Haulage Ltd", "GBP", 20, "TH-{n:06d}"),
        Vendor("Lakeside Express Inc", "USD", 0, "LE{yy}-{n:05d}"),
        Vendor("Iberia Cargas SL", "EUR", 21, "IC/{year}/{n:05d}"),
        Vendor("Flanders Forwarding NV", "EUR", 21, "FF{yy}{n:05d}"),
        Vendor("Scandic Carriers AB", "SEK", 25, "SC-{year}-{n:04d}"),
        Vendor("Po Valley Trasporti Srl", "EUR", 22, "PV {n:04d}/{yy}"),
        Vendor("Vltava Logistics s.r.o.", "CZK", 21, "VL{year}-{n:03d}"),
        Vendor("Danube Shipping Kft", "EUR", 27, "DS-{yy}-{n:04d}"),
    ),
    "test": (
        Vendor("Atlantic Coast Freight Lda", "EUR", 23, "ACF.{year}.{n:04d}"),
        Vendor("Biscay Logistics SARL", "EUR", 20, "BL-{yy}-{n:05d}"),
        Vendor("Fjord Line Cargo AS", "NOK", 25, "FLC/{year}/{n}"),
        Vendor("Vistula Transport SA", "PLN", 23, "VT{yy}/{n:05d}"),
        Vendor("Adriatic Haulers d.o.o.", "EUR", 25, "AH-{n:05d}-{yy}"),
        Vendor("Carpathia Cargo SRL", "RON", 19, "CC{year}{n:05d}"),
        Vendor("Highland Carriers Ltd", "GBP", 20, "HC/{n:06d}"),
        Vendor("Sierra Movers LLC", "USD", 0, "SM-{year}-{n:04d}"),
    ),
}

# Charges on an invoice. "{route}" is filled with a lane of the split's own cities.
CHARGES: dict[str, tuple[str, ...]] = {
    "train": (
        "Road freight {route}",
        "Rail freight {route}",
        "Fuel surcharge",
        "Pallet storage",
        "Customs clearance",
        "Loading fee",
        "Cargo insurance",
        "Waiting time",
        "Express handling",
        "Reefer trailer rental",
        "Toll charges",
        "Cross-dock handling",
        "Pallet exchange",
        "Tail-lift delivery",
    ),
    "test": (
        "Road freight {route}",
        "Ferry crossing {route}",
        "Fuel surcharge",
        "Hazmat surcharge",
        "Weekend delivery",
        "Temperature logging",
        "Pallet storage",
        "Customs clearance",
        "Cargo insurance",
        "Cross-dock handling",
    ),
}

MONTHS: tuple[str, ...] = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)

SERVICE_LEVELS: tuple[str, ...] = ("express", "standard", "economy")
LANE_MODES: tuple[str, ...] = ("road", "rail", "sea", "air", "intermodal")
