//go:build !linux

package main

import "syscall"

// childProcAttr has nothing to add where there is no parent-death signal;
// the benchmark stops its children when it ends normally.
func childProcAttr() *syscall.SysProcAttr { return nil }
