// CoreDNS for the local cluster's real node, with only the plugins its Corefile uses.
//
// CoreDNS's own main (github.com/coredns/coredns) links every plugin: the AWS, Azure and Google
// SDKs among them, three times the packages to compile. A plugin registers itself when its
// package is imported, so this main imports the few that devcluster/node.py configures.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
