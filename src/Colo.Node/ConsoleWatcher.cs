namespace Colo.Node;

/// <summary>Waits for a marker line in a guest's serial console log file.</summary>
public static class ConsoleWatcher
{
    /// <summary>Polls <paramref name="path"/> every 100 ms until it contains <paramref name="marker"/>.</summary>
    /// <exception cref="TimeoutException">The marker did not appear within <paramref name="timeout"/>.</exception>
    public static async Task WaitForMarkerAsync(string path, string marker, TimeSpan timeout, Task? abortWhenCompleted, CancellationToken ct)
    {
        var deadline = DateTime.UtcNow + timeout;
        long offset = 0;
        string carry = "";
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            if (abortWhenCompleted is { IsCompleted: true })
                throw new InvalidOperationException("the VM exited before its console showed " + marker);
            if (File.Exists(path))
            {
                using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
                if (fs.Length > offset)
                {
                    fs.Seek(offset, SeekOrigin.Begin);
                    using var reader = new StreamReader(fs);
                    string text = carry + await reader.ReadToEndAsync(ct);
                    offset = fs.Length;
                    if (text.Contains(marker, StringComparison.Ordinal))
                        return;
                    carry = text.Length > marker.Length ? text[^marker.Length..] : text;
                }
            }
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"guest console {path} did not show {marker} within {timeout.TotalSeconds:F0} s");
            await Task.Delay(100, ct);
        }
    }
}
