import json

from controller import eventlog
from controller.eventlog import EventLog


def test_events_are_json_lines_with_a_growing_seq(tmp_path):
    log = EventLog(str(tmp_path))
    log.record('bind', hypervisor='hv1', iface_id='acme/web1/nic0', port=3)
    log.record('move', iface_id='acme/web1/nic0', **{'from': 'hv1', 'to': 'hv2'})
    log.close()
    lines = [json.loads(line) for line in (tmp_path / eventlog.FILE).read_text().splitlines()]
    assert [(e['seq'], e['event']) for e in lines] == [(1, 'bind'), (2, 'move')]
    assert lines[1]['from'] == 'hv1' and lines[1]['ts'].endswith('+00:00')
    assert [e['event'] for e in log.since(1)] == ['move']


def test_the_log_is_bounded_on_disk_and_in_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(eventlog, 'MAX_BYTES', 2000)
    log = EventLog(str(tmp_path))
    for i in range(2000):
        log.record('bind', hypervisor='hv1', iface_id='t/w%d/nic0' % i, port=i)
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ['events.jsonl', 'events.jsonl.1', 'events.jsonl.2', 'events.jsonl.3']
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) < 5 * 2000 + 4000
    assert len(log.since(0)) == eventlog.RECENT


def test_without_a_state_dir_events_stay_in_memory():
    log = EventLog(None)
    assert log.record('unbind', hypervisor='hv2', iface_id='x', port=1)['seq'] == 1
    assert len(log.since()) == 1


def test_a_state_dir_not_made_yet_is_made(tmp_path):
    """ryu-manager builds the controller before anything created its state dir."""
    log = EventLog(str(tmp_path / 'not' / 'yet'))
    log.record('bind', hypervisor='hv1', iface_id='x', port=1)
    log.close()
    assert (tmp_path / 'not' / 'yet' / eventlog.FILE).exists()
