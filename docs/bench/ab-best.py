#!/usr/bin/env python3
# Best MB/s and p50 per row of several alternating store_bench rounds (--json files A-1.json..A-N.json, B-1..B-N), as a markdown table of B against A.
import json,sys
# usage: ab-best.py PREFIX_A PREFIX_B ROUNDS
a,b=sys.argv[1],sys.argv[2]; R=int(sys.argv[3])
def best(p):
    out={};order=[]
    for r in range(1,R+1):
        for x in json.load(open(f'{p}-{r}.json')):
            k=(x['size'],x['op'])
            if k not in out: out[k]=(0,1e18); order.append(k)
            out[k]=(max(out[k][0],x['mb_per_s']),min(out[k][1],x['p50_us']))
    return out,order
A,o=best(a);B,_=best(b)
h=lambda s: f"{s>>20}MiB" if s>=1<<20 else f"{s>>10}KiB"
print(f"| size | op | {b} MB/s | {a} MB/s | ratio | {b} p50 µs | {a} p50 µs |")
print("|---|---|---:|---:|---:|---:|---:|")
for k in o:
    if k in B: print(f"| {h(k[0])} | {k[1]} | {B[k][0]:.0f} | {A[k][0]:.0f} | {B[k][0]/A[k][0]:.2f} | {B[k][1]:.0f} | {A[k][1]:.0f} |")
