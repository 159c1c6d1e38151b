// Command pause is the Pod sandbox ("pause") container of the real-node test tier: it sleeps until
// SIGTERM or SIGINT and exits 0, and reaps any orphaned child it inherits as PID 1. The upstream image
// (registry.k8s.io/pause) cannot be pulled where no registry is reachable, so make images builds this
// static program into a FROM-scratch image and containerd's sandbox_image points at it.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	children := make(chan os.Signal, 16)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-children:
			reap()
		}
	}
}

// reap collects every exited child so that none stays a zombie.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
