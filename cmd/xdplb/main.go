// Command xdplb attaches the xdplb XDP load balancer to an interface and edits its maps.
package main

import "os"

func main() { os.Exit(run(os.Args, os.Stdout, os.Stderr)) }
