package wireguard

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// chanTUN is the "TUN" of a wireguard-go device in a test: what it reads
// comes from out, what it writes goes to in.
type chanTUN struct {
	out    chan []byte
	in     chan []byte
	events chan wgtun.Event
	closed chan struct{}
}

func newChanTUN() *chanTUN {
	t := &chanTUN{out: make(chan []byte, 16), in: make(chan []byte, 16), events: make(chan wgtun.Event, 1), closed: make(chan struct{})}
	t.events <- wgtun.EventUp
	return t
}

func (t *chanTUN) File() *os.File             { return nil }
func (t *chanTUN) MTU() (int, error)          { return 1420, nil }
func (t *chanTUN) Name() (string, error)      { return "test", nil }
func (t *chanTUN) Events() <-chan wgtun.Event { return t.events }
func (t *chanTUN) BatchSize() int             { return 1 }
func (t *chanTUN) Close() error {
	select {
	case <-t.closed:
	default:
		close(t.closed)
		close(t.events)
	}
	return nil
}

func (t *chanTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case p := <-t.out:
		sizes[0] = copy(bufs[0][offset:], p)
		return 1, nil
	case <-t.closed:
		return 0, os.ErrClosed
	}
}

func (t *chanTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		select {
		case t.in <- bytes.Clone(b[offset:]):
		case <-t.closed:
			return 0, os.ErrClosed
		}
	}
	return len(bufs), nil
}

// wgGo is a wireguard-go device on loopback that knows one peer.
type wgGo struct {
	dev  *device.Device
	tun  *chanTUN
	key  Key
	addr netip.AddrPort
}

func startWireGuardGo(t *testing.T, k Key, peer node, allowed string) *wgGo {
	t.Helper()
	tun := newChanTUN()
	dev := device.NewDevice(tun, conn.NewStdNetBind(), device.NewLogger(device.LogLevelError, "wireguard-go: "))
	t.Cleanup(dev.Close)
	pub := peer.key.Public()
	cfg := fmt.Sprintf("private_key=%x\nlisten_port=0\npublic_key=%x\nendpoint=%s\nallowed_ip=%s\n", k[:], pub[:], peer.addr, allowed)
	if err := dev.IpcSet(cfg); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	state, err := dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	var port int
	for _, line := range strings.Split(state, "\n") {
		if v, ok := strings.CutPrefix(line, "listen_port="); ok {
			port, _ = strconv.Atoi(v)
		}
	}
	if port == 0 {
		t.Fatalf("wireguard-go listens on no port:\n%s", state)
	}
	return &wgGo{dev: dev, tun: tun, key: k, addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))}
}

// TestInteropWireGuardGo: the overlay speaks standard WireGuard. Against
// wireguard-go, as initiator and as responder, packets cross both ways,
// and again after vrouter starts a new session.
func TestInteropWireGuardGo(t *testing.T) {
	for _, weStart := range []bool{true, false} {
		t.Run(fmt.Sprintf("vrouter initiates %v", weStart), func(t *testing.T) {
			a := listen(t)
			pa := a.key.Public()
			// Of a pair, the lower key starts a handshake as it learns
			// its peer; the higher waits a second for the other's, and
			// wireguard-go starts one when it has a packet to send.
			var kw Key
			for {
				var err error
				if kw, err = GenerateKey(); err != nil {
					t.Fatal(err)
				}
				pw := kw.Public()
				if (bytes.Compare(pa[:], pw[:]) < 0) == weStart {
					break
				}
			}
			w := startWireGuardGo(t, kw, a, "10.244.0.0/24")
			if err := a.c.SetPeers([]Peer{{Name: "w", PublicKey: kw.Public(), Endpoint: w.addr, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}}}); err != nil {
				t.Fatal(err)
			}
			toW := ipv4("10.244.0.5", "10.244.1.7", []byte("to wireguard-go"))
			toA := ipv4("10.244.1.7", "10.244.0.5", []byte("to vrouter"))
			send := func() {
				if err := a.c.WriteBatch(toW, len(toW), w.addr); err != nil {
					t.Fatal(err)
				}
				select {
				case got := <-w.tun.in:
					if !bytes.Equal(got, toW) {
						t.Fatalf("wireguard-go received %x, want %x", got, toW)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("wireguard-go received nothing within 10 s")
				}
			}
			receive := func() {
				w.tun.out <- toA
				msgs, _, from := readOne(t, a)
				if len(msgs) != 1 || !bytes.Equal(msgs[0], toA) || from[0] != w.addr {
					t.Fatalf("vrouter received %x from %v, want %x from %v", msgs, from, toA, w.addr)
				}
			}
			if weStart {
				send()
				receive()
			} else {
				receive()
				send()
			}
			// A new session, which vrouter starts as its old one
			// expires: wireguard-go answers, keeps the old one until
			// vrouter's first message under the new, and both go on.
			time.Sleep(2 * initiationInterval)
			age(a.c, rejectAfterTime+time.Second)
			send()
			receive()
			if ps, _ := a.c.Peers(); ps[0].Handshakes < 2 {
				t.Fatalf("peer status %+v, want a second handshake", ps[0])
			}
			s := a.c.Stats()
			if weStart && (s.InitiationsSent < 2 || s.ResponsesReceived != 2) || !weStart && (s.InitiationsReceived != 1 || s.ResponsesSent != 1 || s.ResponsesReceived != 1) {
				t.Fatalf("handshake counters %+v: vrouter initiated %v", s, weStart)
			}
			if r := s.Refused; r != [numRefusals]uint64{} {
				t.Fatalf("refusals %v", r)
			}
		})
	}
}
