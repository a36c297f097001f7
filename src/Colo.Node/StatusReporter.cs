using Microsoft.Extensions.Logging;

namespace Colo.Node;

/// <summary>
/// Writes a daemon's <see cref="NodeStatus"/> to <c>RUN_DIRECTORY/status.json</c> on every change and
/// once a second (so counters stay fresh). Write failures are logged, never thrown.
/// </summary>
internal sealed class StatusReporter
{
    private readonly string _path;
    private readonly ILogger _log;
    private readonly Func<Dictionary<string, long>?> _counters;

    public StatusReporter(NodeStatus status, string runDirectory, Func<Dictionary<string, long>?> counters, ILogger log)
    {
        Status = status;
        _path = Path.Combine(runDirectory, "status.json");
        _counters = counters;
        _log = log;
    }

    public NodeStatus Status { get; }

    /// <summary>Called before every write to refresh figures kept elsewhere (e.g. disk sizes).</summary>
    public Action? BeforeWrite { get; set; }

    public void Write()
    {
        try
        {
            BeforeWrite?.Invoke();
            if (_counters() is { } c)
                Status.Counters = c;
            Status.Write(_path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            _log.LogDebug("status not written: {Error}", e.Message);
        }
    }

    public async Task RunAsync(CancellationToken ct)
    {
        try
        {
            while (!ct.IsCancellationRequested)
            {
                await Task.Delay(1000, ct);
                Write();
            }
        }
        catch (OperationCanceledException)
        {
        }
    }
}
