using System.CommandLine;
using Colo.Cli;

var root = new RootCommand("COLO for QEMU: non-stop service for a VM by running a primary and a secondary VM in lock-step on output.");
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(DaemonCommands.Primary());
root.Subcommands.Add(DaemonCommands.Secondary());
root.Subcommands.Add(DaemonCommands.Status());
root.Subcommands.Add(ImageCommand.Create());
root.Subcommands.Add(DemoClientCommand.Create());
return await root.Parse(args).InvokeAsync();
