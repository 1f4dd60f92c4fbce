"""opendvs: one distributed virtual switch over Open vSwitch."""
