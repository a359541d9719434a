package publish

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// ErrSocketInUse is returned by Listen when another process serves the
// socket.
var ErrSocketInUse = errors.New("another process is serving it")

// listenSocket opens the helper's socket at path, a SOCK_SEQPACKET unix
// socket with mode 0600 from the moment path names it. path's directory
// must exist. A stale socket a dead process left is replaced; a live one
// fails with ErrSocketInUse; anything else at path is left alone.
//
// As the admin socket is, it is bound in a fresh 0700 directory beside
// path, chmod'ed there and linked to path (which fails like bind(2) if
// path exists): binding at path and chmod'ing afterwards would let any
// local user connect in between under a loose umask.
func listenSocket(path string) (*socket, error) {
	dir := filepath.Dir(path)
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("the path exists and is not a socket; remove it or choose another path")
		}
		c, derr := net.DialTimeout("unixpacket", path, time.Second)
		if derr == nil {
			c.Close()
			return nil, ErrSocketInUse
		}
		if !errors.Is(derr, syscall.ECONNREFUSED) {
			// EPROTOTYPE: a live socket of another kind (an admin
			// socket, say); or something else we should not remove.
			return nil, fmt.Errorf("the path is a socket that cannot be checked for a live server (%w); remove it or choose another path", derr)
		}
		// Nobody listens: a stale socket of a process that died.
		if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket: %w", rerr)
		}
	}
	tmp, err := os.MkdirTemp(dir, ".publish")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	bound := filepath.Join(tmp, "s")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: bound, Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false) // Close unlinks path instead
	if err := os.Chmod(bound, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	if err := os.Link(bound, path); err != nil {
		ln.Close()
		if errors.Is(err, os.ErrExist) {
			return nil, ErrSocketInUse // another process took path since the check above
		}
		return nil, err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &socket{UnixListener: ln, path: path, fi: fi}, nil
}

// socket is the helper's listening socket. Its Close removes path if path
// still names this socket and not a successor's.
type socket struct {
	*net.UnixListener
	path string
	fi   os.FileInfo
	once sync.Once
}

func (s *socket) Close() error {
	err := s.UnixListener.Close()
	s.once.Do(func() {
		if fi, serr := os.Lstat(s.path); serr == nil && os.SameFile(fi, s.fi) {
			os.Remove(s.path)
		}
	})
	return err
}
