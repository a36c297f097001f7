using Colo.Proxy;
using Colo.Vm;
using Microsoft.Extensions.Logging;

namespace Colo.Node.Secondary;

/// <summary>
/// One SVM QEMU generation: the process, its <c>-netdev stream</c> listener and connection.
/// A generation starts as the standby (waiting in <c>-incoming defer</c>) and becomes the active
/// SVM when a checkpoint is loaded into it.
/// </summary>
internal sealed class SvmInstance : IAsyncDisposable
{
    private SvmInstance(int generation, QemuProcess qemu, NetdevStreamListener listener, NetdevStreamConnection connection)
    {
        Generation = generation;
        Qemu = qemu;
        Listener = listener;
        Connection = connection;
    }

    public int Generation { get; }
    public QemuProcess Qemu { get; }
    public NetdevStreamListener Listener { get; }
    public NetdevStreamConnection Connection { get; }

    /// <summary>Starts a standby QEMU mapping <paramref name="ramPath"/> and waits for its NIC to connect.</summary>
    public static async Task<SvmInstance> StartStandbyAsync(NodeConfig cfg, int generation, string ramPath, ILoggerFactory loggers, CancellationToken ct)
    {
        string tag = "svm" + generation;
        var spec = VmSpecs.For(cfg, tag, ramPath, incoming: true, VmSpecs.DiskSocket(cfg, "svm"));
        var listener = new NetdevStreamListener(spec.NetSocketPath);
        QemuProcess? qemu = null;
        try
        {
            qemu = await QemuProcess.StartAsync(spec, loggers.CreateLogger(tag), TimeSpan.FromSeconds(30), ct);
            var conn = await listener.AcceptAsync(TimeSpan.FromSeconds(15), ct);
            return new SvmInstance(generation, qemu, listener, conn);
        }
        catch
        {
            if (qemu != null)
                await qemu.DisposeAsync();
            listener.Dispose();
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            Qemu.Kill();
        }
        catch (InvalidOperationException)
        {
        }
        await Qemu.DisposeAsync();
        Connection.Dispose();
        Listener.Dispose();
    }
}
