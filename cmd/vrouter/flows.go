package main

import (
	"path/filepath"
	"strings"

	"go.uber.org/zap"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/admin"
	"github.com/vrouter/vrouter/cmd/vrouter/internal/dataplane"
)

// flowFilePath is the NAT's flow file for TUN tunName in dir:
// dir/<tunName>.netns-<inode>.flows, named by the admin socket's rule, so
// that routers in different network namespaces sharing one /run never
// adopt each other's flows, and the next router in the same one does.
func flowFilePath(dir, tunName string) string {
	base := strings.TrimSuffix(filepath.Base(admin.DefaultSocket(tunName)), ".sock")
	return filepath.Join(dir, base+".flows")
}

// persistFlows has dp's NAT adopt the flow file of TUN tunName in dir
// (--state-dir; "" turns it off) and record its flows there, so that
// established nat connections outlive this process. It must run after
// the first state is applied and before the data path runs. A file that
// cannot be made costs only that: the router runs without it, with a
// warning. The returned function stops the recording; call it after the
// data path stopped.
func persistFlows(dp *dataplane.DataPlane, dir, tunName string, log *zap.Logger) (stop func()) {
	if dir == "" {
		return func() {}
	}
	path := flowFilePath(dir, tunName)
	res, err := dp.NAT().Persist(path)
	if err != nil {
		log.Warn("no flow file: nat connections through this router will not survive its restart", zap.Error(err))
		return func() {}
	}
	if res.Refused != "" || res.Corrupt > 0 || res.Foreign > 0 {
		log.Warn("flow file had records that cannot be trusted; they were skipped",
			zap.String("path", path), zap.String("refused", res.Refused),
			zap.Int("corrupt", res.Corrupt), zap.Int("foreign", res.Foreign))
	}
	if tmpfs, known := onTmpfs(path); known && !tmpfs {
		log.Warn("the flow file is not on tmpfs: the kernel writes its pages back to disk, and a flow's start may wait for that; use a --state-dir on tmpfs such as /run/vrouter",
			zap.String("path", path))
	}
	return func() {
		if err := dp.NAT().ClosePersist(); err != nil {
			log.Warn("close the flow file", zap.Error(err))
		}
	}
}
