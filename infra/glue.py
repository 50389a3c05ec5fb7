"""A Glue table over the tier segments, so Athena can query a topic's history in place.

Tier segments are plain Avro container files (`segments.TIER_SCHEMA`) under
Hive-style prefixes ``tier/topic=<name>/partition=<p>/``.  The table uses
partition projection, so new topics and partitions need no crawler and no
``MSCK REPAIR``; the topic is an *injected* projection, which makes every
query name its topic (``WHERE topic = 'orders'``) and keeps scans to it.

Caveat for queries: until GC removes a superseded segment (a compacted
rewrite, a duplicate from racing tierers) both copies are under the prefix,
so a query may count such records twice for the GC grace period.
"""

from __future__ import annotations

import json
from typing import Any

from tidelog.storage.segments import TIER_SCHEMA

AVRO_SERDE = "org.apache.hadoop.hive.serde2.avro.AvroSerDe"
AVRO_INPUT = "org.apache.hadoop.hive.ql.io.avro.AvroContainerInputFormat"
AVRO_OUTPUT = "org.apache.hadoop.hive.ql.io.avro.AvroContainerOutputFormat"
TABLE_NAME = "tier_records"
MAX_PARTITION = 99_999  # the catalog's limit is 100000 partitions per topic

_HIVE_TYPES = {"long": "bigint", "int": "int", "string": "string", "bytes": "binary"}


def hive_type(avro: Any) -> str:
    """The Hive column type of an Avro field type (the subset TIER_SCHEMA uses)."""
    if isinstance(avro, str):
        return _HIVE_TYPES[avro]
    if isinstance(avro, list):
        (inner,) = [t for t in avro if t != "null"]
        return hive_type(inner)
    if avro["type"] == "array":
        return f"array<{hive_type(avro['items'])}>"
    if avro["type"] == "record":
        return "struct<" + ",".join(f"{f['name']}:{hive_type(f['type'])}" for f in avro["fields"]) + ">"
    raise ValueError(f"no hive type for avro type {avro!r}")


def database_name(stack_name: str) -> str:
    """Glue names are lowercase letters, digits and underscores."""
    return "tidelog_" + "".join(c if c.isalnum() else "_" for c in stack_name.lower())


def glue_resources(stack_name: str, bucket_ref: Any) -> dict[str, Any]:
    location = {"Fn::Sub": ["s3://${Bucket}/tier/", {"Bucket": bucket_ref}]}
    template = {"Fn::Sub": ["s3://${Bucket}/tier/topic=${!topic}/partition=${!partition}/", {"Bucket": bucket_ref}]}
    schema = json.dumps(TIER_SCHEMA, separators=(",", ":"))
    return {
        "GlueDatabase": {
            "Type": "AWS::Glue::Database",
            "Properties": {"CatalogId": {"Ref": "AWS::AccountId"}, "DatabaseInput": {
                "Name": database_name(stack_name),
                "Description": "tidelog tier segments (record-level Avro), one table per cluster",
            }},
        },
        "GlueTierTable": {
            "Type": "AWS::Glue::Table",
            "Properties": {
                "CatalogId": {"Ref": "AWS::AccountId"},
                "DatabaseName": {"Ref": "GlueDatabase"},
                "TableInput": {
                    "Name": TABLE_NAME,
                    "Description": "Every tiered record: query with WHERE topic = '<name>'",
                    "TableType": "EXTERNAL_TABLE",
                    "Parameters": {
                        "classification": "avro",
                        "projection.enabled": "true",
                        "projection.topic.type": "injected",
                        "projection.partition.type": "integer",
                        "projection.partition.range": f"0,{MAX_PARTITION}",
                        "storage.location.template": template,
                        "avro.schema.literal": schema,
                    },
                    "PartitionKeys": [{"Name": "topic", "Type": "string"}, {"Name": "partition", "Type": "int"}],
                    "StorageDescriptor": {
                        "Columns": [{"Name": f["name"], "Type": hive_type(f["type"]), "Comment": f["doc"]}
                                    for f in TIER_SCHEMA["fields"]],
                        "Location": location,
                        "InputFormat": AVRO_INPUT,
                        "OutputFormat": AVRO_OUTPUT,
                        "SerdeInfo": {"SerializationLibrary": AVRO_SERDE,
                                      "Parameters": {"avro.schema.literal": schema}},
                    },
                },
            },
        },
    }
