// Package vrrp will run VRRPv2/v3 for the virtual IPs and report peer directors' MACs to the data
// plane (see docs and the VRRP issue). Nothing is implemented yet: peers are added by hand with
// `xdplb peer add MAC` until then.
package vrrp
