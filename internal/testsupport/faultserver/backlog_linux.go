//go:build linux

package faultserver

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// FullBacklog is a loopback listener that never accepts and whose accept
// queue is full: the kernel drops every new SYN, so a dial to Addr hangs
// until the dialer's timeout, as against a host that black-holes packets.
type FullBacklog struct {
	Addr   string
	fd     int
	filler []net.Conn
}

// NewFullBacklog starts a listener with a backlog of 0 and fills its
// accept queue. It reports an error when the kernel does not drop SYNs to
// a full queue (net.ipv4.tcp_abort_on_overflow, for one, makes it reset).
func NewFullBacklog() (*FullBacklog, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("faultserver: socket: %w", err)
	}
	s := &FullBacklog{fd: fd}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		s.Close()
		return nil, fmt.Errorf("faultserver: bind: %w", err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		s.Close()
		return nil, fmt.Errorf("faultserver: listen: %w", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("faultserver: getsockname: %w", err)
	}
	s.Addr = fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// Fill the queue: connections complete the handshake until it is full,
	// then a dial times out. A handful suffices for a backlog of 0.
	d := net.Dialer{Timeout: 200 * time.Millisecond}
	for range 8 {
		c, err := d.Dial("tcp", s.Addr)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return s, nil
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("faultserver: filling the accept queue: %w", err)
		}
		s.filler = append(s.filler, c)
	}
	s.Close()
	return nil, errors.New("faultserver: the accept queue never filled")
}

// Close closes the listener and the connections that fill its queue.
func (s *FullBacklog) Close() {
	for _, c := range s.filler {
		c.Close()
	}
	syscall.Close(s.fd)
}
