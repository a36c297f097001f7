namespace Colo.Demo;

/// <summary>The clients' waits between attempts.</summary>
internal static class Pause
{
    /// <summary>Waits <paramref name="delay"/>; false (instead of an exception) when <paramref name="ct"/> is cancelled first.</summary>
    public static async Task<bool> TryDelayAsync(TimeSpan delay, CancellationToken ct)
    {
        try
        {
            await Task.Delay(delay, ct).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }
}
