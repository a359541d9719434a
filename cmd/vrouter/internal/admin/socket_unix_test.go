//go:build unix

package admin

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// TestSocketModeFromCreation: the admin socket is 0600 from the moment
// its path exists, whatever the umask, so that no other local user can
// connect in a window between its creation and a chmod. Under umask 0 a
// socket bound at its path would be 0777 until chmod'ed; a watcher stats
// the path all the while Listen runs, 200 times over, and must never see
// any other mode. The umask is the process's: no test of this package
// runs in parallel with this one.
func TestSocketModeFromCreation(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "run")
	socket := filepath.Join(dir, "vr0.sock")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var seen []os.FileMode // modes other than a 0600 socket
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if fi, err := os.Lstat(socket); err == nil && (fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600) {
				seen = append(seen, fi.Mode())
			}
		}
	})
	for i := range 200 {
		ln, err := Listen(socket)
		if err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("Listen(%s) #%d: %v", socket, i, err)
		}
		if got := ln.Addr().String(); got != socket {
			t.Errorf("Listen(%s) #%d: Addr() = %s, want the socket's path", socket, i, got)
		}
		// Right after Listen returns.
		if fi, err := os.Lstat(socket); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("Listen(%s) #%d: Lstat = %v, %v; want a socket with mode 0600", socket, i, fi.Mode(), err)
		}
		if err := ln.Close(); err != nil {
			t.Errorf("Close() #%d = %v", i, err)
		}
		if _, err := os.Lstat(socket); !os.IsNotExist(err) {
			t.Errorf("after Close() #%d: Lstat(%s) = %v, want the socket removed", i, socket, err)
		}
	}
	close(stop)
	wg.Wait()
	if len(seen) > 0 {
		t.Errorf("the socket's path was seen with modes %v while Listen ran, want only 0600 sockets", seen[:min(len(seen), 5)])
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("ReadDir(%s) after Close = %v, %v; want it empty (no temporary left)", dir, ents, err)
	}
}
