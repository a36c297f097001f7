using System.CommandLine;
using System.Runtime.InteropServices;
using Colo.Cli;

// SIGINT/SIGTERM cancel Lifetime.Token and the command cleans up (daemons stop their VMs, the demo
// tears down its topology); a second signal terminates at once.
using var shutdown = new CancellationTokenSource();
Lifetime.Token = shutdown.Token;
void OnSignal(PosixSignalContext context)
{
    if (shutdown.IsCancellationRequested)
        return; // second signal: default action
    context.Cancel = true;
    shutdown.Cancel();
}
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);

var root = new RootCommand("COLO for QEMU: non-stop service for a VM by running a primary and a secondary VM in lock-step on output.");
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(DaemonCommands.Primary());
root.Subcommands.Add(DaemonCommands.Secondary());
root.Subcommands.Add(DaemonCommands.Status());
root.Subcommands.Add(ImageCommand.Create());
root.Subcommands.Add(DemoClientCommand.Create());
return await root.Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null });
