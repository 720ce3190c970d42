#!/usr/bin/env python3
"""Checks data/top-ports.tsv against the rules in data/TOP-PORTS.md."""
import os, tomllib, collections, re
D=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
lines=open(D+"/top-ports.tsv").read().split("\n")
assert lines[-1]=="" ; lines=lines[:-1]
assert lines[0]=="rank\tport\tproto\ttier\tservice", lines[0]
print("header ok")
rows=[l.split("\t") for l in lines[1:]]
assert all(len(r)==5 for r in rows)
seen=set(); ranks=collections.defaultdict(list); protos_order=[]
for r,p,pr,t,s in rows:
    r,p,t=int(r),int(p),int(t)
    assert pr in ("tcp","udp") and 1<=p<=65535 and t in (1,2,3,4,5)
    assert re.fullmatch(r"[a-z0-9][a-z0-9._+-]*", s), s
    assert (p,pr) not in seen, (p,pr); seen.add((p,pr))
    ranks[pr].append(r); protos_order.append(pr)
print("ports in range, no duplicate (port, proto), names lowercase/no whitespace: ok")
assert protos_order==sorted(protos_order, key=lambda x: x!="tcp"), "tcp rows must come first"
for pr in ("tcp","udp"):
    assert ranks[pr]==list(range(1,len(ranks[pr])+1)), pr
    tiers=[int(r[3]) for r in rows if r[2]==pr]; assert tiers==sorted(tiers)
print("sorted tcp then udp, ranks contiguous from 1, tiers non-decreasing: ok")
n={pr:len(ranks[pr]) for pr in ranks}; print("counts:", n); assert n["tcp"]>=1500 and n["udp"]>=300
notes=tomllib.load(open(D+"/notes.toml","rb"))["note"]; miss=[]
for x in notes:
    for pr in (["tcp","udp"] if x["proto"]=="tcp+udp" else [x["proto"]]):
        if (x["port"],pr) not in seen: miss.append((x["port"],pr))
assert not miss, miss
print(f"all {len(notes)} notes.toml entries present in their list(s): ok")
print("per tier:", sorted(collections.Counter((r[2],int(r[3])) for r in rows).items()))
