#!/usr/bin/env python3
"""Which threads held the cores while the JS thread waited for one.

Usage (as root, perf installed):
    perf sched record -o sched.data -- node bench/loop-gaps.js 12
    perf sched timehist -i sched.data > timehist.txt
    python3 bench/loop-gaps-attribution.py timehist.txt [pid]

For every time the node process's main thread waited more than 3 ms between
its wake-up and getting a core ("sch delay"), adds up what each kind of
thread ran on any core during that wait.
"""
import collections
import re
import sys

LINE = re.compile(r'\s*([\d.]+)\s+\[(\d+)\]\s+(.+?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$')


def kind(task):
    if 'scenario-work' in task:
        return 'the addon\'s compute pool (niceness +10)'
    if 'tokio' in task:
        return 'the addon\'s async runtime threads'
    if task.startswith('node['):
        return 'other threads of the node process'
    if task.startswith('postgres'):
        return 'PostgreSQL'
    if task.startswith('redis'):
        return 'redis-server'
    if task.startswith('<idle>'):
        return 'idle (the other core had nothing to run)'
    if re.match(r'(kworker|ksoftirqd|rcu|kdamond|migration|kcompact|khugepaged)', task):
        return 'kernel threads'
    return 'other processes'


def main():
    records = []
    for line in open(sys.argv[1]):
        m = LINE.match(line)
        if m:
            t, _cpu, task, _wait, delay, run = m.groups()
            records.append((float(t), task, float(delay), float(run)))
    pid = sys.argv[2] if len(sys.argv) > 2 else None
    main_thread = re.compile(r'node\[(%s)\]$' % (pid or r'\d+'))
    held = collections.Counter()
    waits = 0
    for t, task, delay, run in records:
        if not main_thread.match(task) or delay < 3.0:
            continue
        waits += 1
        # A record is written when its thread leaves the core: it ran from t - run to t.
        end = t - run / 1000.0
        start = end - delay / 1000.0
        for t2, task2, _d, run2 in records:
            overlap = min(t2, end) - max(t2 - run2 / 1000.0, start)
            if overlap > 0 and task2 != task:
                held[kind(task2)] += overlap * 1000.0
    print(f'{waits} waits of the JS thread over 3 ms; what ran on the cores meanwhile (ms):')
    for k, ms in held.most_common():
        print(f'  {k}: {ms:.1f}')


if __name__ == '__main__':
    main()
