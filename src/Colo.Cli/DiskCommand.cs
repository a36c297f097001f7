using System.CommandLine;
using Colo.Image;
using Colo.Nbd;

namespace Colo.Cli;

/// <summary>
/// <c>colo disk create | import | export | check</c>: the raw images a protected VM's <c>disk_image</c> names. COLO
/// replicates raw images only; other formats are converted with Debian's <c>qemu-img convert</c>.
/// </summary>
internal static class DiskCommand
{
    public static Command Create()
    {
        var path = new Argument<string>("path") { Description = "Raw image file" };
        var size = new Option<int>("--size-mib") { Description = "Size in MiB", DefaultValueFactory = _ => DataDisk.DefaultSizeMiB };
        var create = new Command("create", "Create a raw image with an empty ext4 file system (label colodata), as the guest mounts on /data.") { path, size };
        create.SetAction(async (pr, _) =>
        {
            int mib = pr.GetValue(size);
            if (mib is < 16 or > 1048576)
            {
                Console.Error.WriteLine("colo disk create: --size-mib must be 16..1048576");
                return 64;
            }
            return await RunAsync("create", async () =>
            {
                await DataDisk.CreateAsync(Path.GetFullPath(pr.GetValue(path)!), mib, Lifetime.Token);
                Console.WriteLine($"created {pr.GetValue(path)} ({mib} MiB, ext4)");
            });
        });

        var src = new Argument<string>("source") { Description = "Image to read" };
        var dst = new Argument<string>("destination") { Description = "Image to write (created or replaced)" };
        var format = new Option<string>("--format") { Description = "Format of the non-raw side (qcow2, vmdk, vdi, ...)", DefaultValueFactory = _ => "qcow2" };
        var import = new Command("import", "Convert an image (e.g. qcow2) into a raw image for disk_image.") { src, dst, format };
        import.SetAction(async (pr, _) => await RunAsync("import", async () =>
        {
            await QemuImg.ImportToRawAsync(pr.GetValue(src)!, pr.GetValue(format)!, pr.GetValue(dst)!, ct: Lifetime.Token);
            Console.WriteLine($"imported {pr.GetValue(src)} -> {pr.GetValue(dst)} (raw)");
        }));
        var export = new Command("export", "Convert a raw image (e.g. the surviving disk after a failover) into another format.") { src, dst, format };
        export.SetAction(async (pr, _) => await RunAsync("export", async () =>
        {
            await QemuImg.ExportFromRawAsync(pr.GetValue(src)!, pr.GetValue(dst)!, pr.GetValue(format)!, ct: Lifetime.Token);
            Console.WriteLine($"exported {pr.GetValue(src)} -> {pr.GetValue(dst)} ({pr.GetValue(format)})");
        }));

        var image = new Argument<string>("path") { Description = "Raw image holding an ext4 file system (not in use)" };
        var check = new Command("check", "Check the ext4 file system in a raw image without changing it (journal replayed on a copy, then e2fsck -fn). Exit 0 clean, 1 not clean.") { image };
        check.SetAction(async (pr, _) => await RunAsync("check", async () =>
        {
            string p = Path.GetFullPath(pr.GetValue(image)!);
            var r = await DataDisk.CheckAsync(p, p + ".fsck-scratch", Lifetime.Token);
            Console.WriteLine(r.Output.TrimEnd());
            Console.WriteLine(r.Clean ? $"clean{(r.JournalReplayed ? " (journal replayed)" : "")}" : $"NOT clean (e2fsck exit {r.ExitCode})");
            return r.Clean ? 0 : 1;
        }));
        return new Command("disk", "Guest disk images (raw).") { create, import, export, check };
    }

    private static Task<int> RunAsync(string name, Func<Task> action) => RunAsync(name, async () =>
    {
        await action();
        return 0;
    });

    private static async Task<int> RunAsync(string name, Func<Task<int>> action)
    {
        try
        {
            return await action();
        }
        catch (Exception e) when (e is ImageBuildException or QemuImgException or IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"colo disk {name}: {e.Message}");
            return 1;
        }
    }
}
