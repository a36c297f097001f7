using Colo.Proxy;
using Microsoft.Extensions.Logging;

namespace Colo.Node;

/// <summary>Receives one client frame read from the TAP; the memory is the pump's buffer, valid only during the call.</summary>
internal delegate void TapFrameHandler(Memory<byte> frame);

/// <summary>
/// Reads client frames from a TAP device on a dedicated thread (reads block) until the TAP is closed or
/// <c>stop</c> is cancelled, handing each frame to a handler. One 64 KiB buffer per pump, reused.
/// </summary>
internal static class TapPump
{
    public static Thread Start(TapDevice tap, CancellationToken stop, ILogger log, TapFrameHandler onFrame)
    {
        var thread = new Thread(() => Run(tap, stop, log, onFrame)) { IsBackground = true, Name = "colo-tap-in" };
        thread.Start();
        return thread;
    }

    private static void Run(TapDevice tap, CancellationToken stop, ILogger log, TapFrameHandler onFrame)
    {
        var buffer = new byte[65536];
        while (!stop.IsCancellationRequested)
        {
            int n;
            try
            {
                n = tap.Read(buffer);
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException)
            {
                if (!stop.IsCancellationRequested)
                    log.LogWarning("TAP read stopped: {Error}", e.Message);
                return;
            }
            if (n <= 0)
                return;
            onFrame(buffer.AsMemory(0, n));
        }
    }
}
