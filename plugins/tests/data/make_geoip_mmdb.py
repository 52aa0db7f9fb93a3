"""Writes the small MaxMind-format databases used by the `geoip` plugin tests.

The output is committed, so `cargo test` needs no Python. To regenerate
(from the repository root):

    python3.11 -m venv /tmp/mmdbvenv
    /tmp/mmdbvenv/bin/pip install mmdb-writer==0.2.7 netaddr==1.3.0
    /tmp/mmdbvenv/bin/python plugins/tests/data/make_geoip_mmdb.py

It writes, beside this script:
- geoip-city-test.mmdb: GeoIP2-City layout (country, subdivisions, city,
  location), IPv6 tree with IPv4 at ::/96 so IPv4 lookups work;
- geoip-asn-test.mmdb: GeoLite2-ASN layout (autonomous_system_number,
  autonomous_system_organization).

The records are made up for tests (shaped like MaxMind's, with plausible
places); the private networks are in there on purpose, to check that the
plugin skips them even when a database has data for them. Integer and float
types follow MaxMind's (uint32 geoname ids and ASNs, uint16 accuracy radius,
double coordinates), and build_epoch is fixed so the output is reproducible.
"""

from pathlib import Path

from mmdb_writer import MMDBWriter, MmdbU16, MmdbU32
from netaddr import IPSet

HERE = Path(__file__).resolve().parent
BUILD_EPOCH = 1_795_392_000  # 2026-11-23T00:00:00Z


class FixedEpochWriter(MMDBWriter):
    def _build_meta(self):
        meta = super()._build_meta()
        meta["build_epoch"] = BUILD_EPOCH
        return meta


def names(en):
    return {"en": en}


def place(geoname_id, iso_code, name):
    return {"geoname_id": MmdbU32(geoname_id), "iso_code": iso_code, "names": names(name)}


def city_record(continent, country, subdivision, city, location):
    record = {
        "continent": {
            "code": continent[0],
            "geoname_id": MmdbU32(continent[1]),
            "names": names(continent[2]),
        },
        "country": place(*country),
        "registered_country": place(*country),
    }
    if subdivision:
        record["subdivisions"] = [place(*subdivision)]
    if city:
        record["city"] = {"geoname_id": MmdbU32(city[0]), "names": names(city[1])}
    if location:
        lat, lon, tz, radius = location
        record["location"] = {
            "accuracy_radius": MmdbU16(radius),
            "latitude": lat,
            "longitude": lon,
            "time_zone": tz,
        }
    return record


EUROPE = ("EU", 6255148, "Europe")
GB = (2635167, "GB", "United Kingdom")
DE = (2921044, "DE", "Germany")

CITY = [
    (
        ["81.2.69.0/24"],
        city_record(
            EUROPE,
            GB,
            (6269131, "ENG", "England"),
            (2643743, "London"),
            (51.5142, -0.0931, "Europe/London", 10),
        ),
    ),
    (
        ["2a01:4f8::/32"],
        city_record(
            EUROPE,
            DE,
            (2950157, "BE", "Land Berlin"),
            (2950159, "Berlin"),
            (52.5244, 13.4105, "Europe/Berlin", 20),
        ),
    ),
    # Country only: no subdivision, city or location.
    (["2a02:c7f::/32"], city_record(EUROPE, GB, None, None, None)),
    # Private and loopback networks, which the plugin must never report.
    (
        ["10.0.0.0/8", "127.0.0.0/8", "192.168.0.0/16", "fd00::/8"],
        city_record(
            EUROPE,
            DE,
            (2950157, "BE", "Land Berlin"),
            (2950159, "Berlin"),
            (52.5244, 13.4105, "Europe/Berlin", 1000),
        ),
    ),
]

ASN = [
    (["81.2.69.0/24"], 20712, "Andrews & Arnold Ltd"),
    (["2a01:4f8::/32"], 24940, "Hetzner Online GmbH"),
    # In the ASN database only, so the city database does not resolve it.
    (["8.8.8.0/24"], 15169, "Google LLC"),
    (["10.0.0.0/8"], 64512, "Private Use"),
]


def main():
    city = FixedEpochWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoIP2-City",
        languages=["en"],
        description="Orrery geoip test data (GeoIP2-City layout)",
    )
    for networks, record in CITY:
        city.insert_network(IPSet(networks), record)
    city.to_db_file(str(HERE / "geoip-city-test.mmdb"))

    asn = FixedEpochWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoLite2-ASN",
        languages=["en"],
        description="Orrery geoip test data (GeoLite2-ASN layout)",
    )
    for networks, number, org in ASN:
        asn.insert_network(
            IPSet(networks),
            {
                "autonomous_system_number": MmdbU32(number),
                "autonomous_system_organization": org,
            },
        )
    asn.to_db_file(str(HERE / "geoip-asn-test.mmdb"))


if __name__ == "__main__":
    main()
