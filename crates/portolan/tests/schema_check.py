"""Validates JSON documents against portolan's schemas (crates/portolan/schemas).

usage: schema_check.py SCHEMA_DIR SCHEMA_NAME FILE [--lines]

With --lines, FILE holds JSON Lines and each line is validated against the schema's
`$defs/ITEM` given as SCHEMA_NAME#ITEM. Exit 0 when valid; 1 with the errors; 2 when the
jsonschema module is missing (the test decides whether that is a skip or a failure).
"""
import json
import pathlib
import sys

try:
    import jsonschema
except ImportError:
    sys.exit(2)


def main():
    schema_dir, name, path = sys.argv[1:4]
    lines = "--lines" in sys.argv[4:]
    schemas = {}
    for p in pathlib.Path(schema_dir).glob("*.schema.json"):
        s = json.loads(p.read_text())
        schemas[s["$id"]] = s
    item = None
    if "#" in name:
        name, item = name.split("#", 1)
    root = next(s for s in schemas.values() if s["$id"].endswith("/" + name + ".schema.json"))
    schema = root if item is None else {"$ref": root["$id"] + "#/$defs/" + item}
    try:
        from referencing import Registry, Resource

        registry = Registry().with_resources(
            (i, Resource.from_contents(s)) for i, s in schemas.items()
        )
        validator = jsonschema.Draft202012Validator(schema, registry=registry)
    except ImportError:  # jsonschema before 4.18
        resolver = jsonschema.RefResolver(root["$id"], root, store=schemas)
        validator = jsonschema.Draft202012Validator(schema, resolver=resolver)
    text = pathlib.Path(path).read_text()
    docs = [json.loads(l) for l in text.splitlines() if l.strip()] if lines else [json.loads(text)]
    if lines and not docs:
        print("no JSON lines to validate", file=sys.stderr)
        return 1
    bad = 0
    for i, doc in enumerate(docs):
        for err in validator.iter_errors(doc):
            bad += 1
            where = "/".join(str(p) for p in err.absolute_path)
            print(f"doc {i}: at /{where}: {err.message[:300]}", file=sys.stderr)
            if bad > 20:
                return 1
    return 1 if bad else 0


sys.exit(main())
