//go:build !linux

package faultserver

import "errors"

// FullBacklog is a loopback listener whose accept queue is full; it is
// built on Linux only.
type FullBacklog struct{ Addr string }

// NewFullBacklog reports errors.ErrUnsupported off Linux.
func NewFullBacklog() (*FullBacklog, error) { return nil, errors.ErrUnsupported }

// Close does nothing.
func (s *FullBacklog) Close() {}
