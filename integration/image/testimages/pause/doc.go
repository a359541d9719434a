// Command pause is the sandbox container of the real-cluster test's pods,
// in the image registry.k8s.io/pause:3.10 that package image builds (so
// nodes need no registry): it holds the pod's namespaces open by doing
// nothing until SIGTERM or SIGINT, then exits 0.
//
// As PID 1 of a pod that shares its process namespace, it is the parent of
// every orphaned process in the pod, and reaps each as it exits so no
// zombie is left behind. It is also a child subreaper, so it reaps the
// orphans of its descendants when it is not PID 1.
//
// It owns nothing else: no files, no network, and no output but one line
// once it handles the signals (on stdout), or one on a bad argument.
package main
