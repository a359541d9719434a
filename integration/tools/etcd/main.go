// Command etcd is upstream's etcd server (go.etcd.io/etcd/server/v3
// etcdmain), the fallback integration/tools/build.sh builds when Debian's
// etcd-server package is not available.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
