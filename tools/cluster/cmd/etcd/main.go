// Command etcd is the etcd server (go.etcd.io/etcd/server/v3's etcdmain)
// at the version the pinned Kubernetes release requires, built here so the
// local control plane of scripts/cluster needs no download at run time.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
