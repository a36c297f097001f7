namespace Colo.Cli;

/// <summary>The process's shutdown signal: cancelled by the first SIGINT or SIGTERM (see Program.cs).</summary>
internal static class Lifetime
{
    public static CancellationToken Token { get; set; }
}
