"""Real benchmark files this project knows by name, where to get them, and their sha256.

Every file here is a file of a public GitHub repository, pinned to one commit; its sha256
was verified byte for byte against the repository's git blob. A file enters the cache
(``<cache_dir>/downloads/<folder>/<file>``) only through :func:`fetch_pinned` (download,
checked) or :func:`import_files` (``fusion data import DIR``: files placed by hand,
checked); a file whose sha256 differs is refused with both hashes named, and nothing in the
cache is overwritten by it.

========================= ====================== ==========================================
folder                    repository @ commit    contents
========================= ====================== ==========================================
``rmd17-npz/``            andersx/rmd17-npz      rMD17 (Christensen & von Lilienfeld 2020):
                          @ 4f6bb0a              the author's 5 train/test pairs per molecule,
                                                 ``rmd17_<mol>_{train,test}_0<k>.npz``, 1,000
                                                 frames each, kcal/mol and kcal/mol/Å
``dataset_3BPA/``         davkovacs/               3BPA training sets (train_300K,
``dataset_acac/``         BOTNet-datasets        train_mixedT), acetylacetone (train 300/600 K,
``dataset_ethanol/``      @ 29e6d46              MD tests at 300/600 K, H transfer, dihedral
                                                 scan), ethanol; extxyz in eV and eV/Å, with
                                                 isolated-atom energies
========================= ====================== ==========================================

>>> PINNED["rmd17-npz/rmd17_ethanol_train_01.npz"].repository
'andersx/rmd17-npz'
>>> pinned_file("dataset_acac/train_300K.xyz").url.startswith("https://raw.githubusercontent.com/")
True
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from fusion.data.download import RemoteFile, download_dir, fetch, sha256_of

__all__ = ["PinnedFile", "PINNED", "REPOSITORIES", "pinned_file", "pinned_path",
           "fetch_pinned", "ImportReport", "import_files"]

#: folder -> (GitHub repository, commit) the files of that folder are pinned to.
REPOSITORIES = {
    "rmd17-npz": ("andersx/rmd17-npz", "4f6bb0a186822c90d47cd98b7a27991fe0b3173b"),
    "dataset_3BPA": ("davkovacs/BOTNet-datasets", "29e6d467317e4b5967b7ea5cbee54de953fa0d45"),
    "dataset_acac": ("davkovacs/BOTNet-datasets", "29e6d467317e4b5967b7ea5cbee54de953fa0d45"),
    "dataset_ethanol": ("davkovacs/BOTNet-datasets", "29e6d467317e4b5967b7ea5cbee54de953fa0d45"),
}

# "<folder>/<file>": sha256 (verified against the repositories' git blobs).
_SHA256 = {
    "dataset_3BPA/iso_atoms.xyz": "e12a2465a2612bf38fd5dabdf64d4b57fc58ce9610a858c54ea1142d517c053f",
    "dataset_3BPA/train_300K.xyz": "d109971fab90e2231ad931a83eb704c8d940f5c7d7a8de27fe3b84ea18634c0a",
    "dataset_3BPA/train_mixedT.xyz": "bc108532964b2ed259eaaabf82e5dfaffa5bda9ac384fc2afabcce192a49250b",
    "dataset_acac/isolated_atoms.xyz": "b74f321b453374621b447d65c60979f70df1b7182c8ee0215388b2c574f33823",
    "dataset_acac/test_H_transfer.xyz": "ea4d76c79cf4cfccd2f93eaf755172b0b648886c4907eb0f82dff07a77530743",
    "dataset_acac/test_MD_300K.xyz": "2291f3186a3cc6a5e05e92952c84a9237ca53f862d78fd3316a769360719ec43",
    "dataset_acac/test_MD_600K.xyz": "d5a5bba154ec43f915eb7529f86ec3af60e6f911743859daba030181a0378ff7",
    "dataset_acac/test_dihedral.xyz": "0c2246a593579de5a4450698d5f4ba5802b095824b7f211aa5889339967c6809",
    "dataset_acac/train_300K.xyz": "8f5706d6902360555a5be59395612d2afc3489a75688388a58e7275fdad68af3",
    "dataset_acac/train_600K.xyz": "180c2538508f7810a623c279426f44953ee7cfb2af77e48ea3986ff97645a71c",
    "dataset_ethanol/isolated_atoms.xyz": "a2a662390f31ad623ce493038e680bc34214f88d4432566bf8fbd0761be57583",
    "dataset_ethanol/test_H_removal.xyz": "8d9f13272eb1c7570edaf6afc31e6f8670df38c41b82611504878576708b1a1c",
    "dataset_ethanol/test_MD.xyz": "b8726933d5b9083989d8e3cc7013c18e0950cf0cbc6f6cd570fdb9759001031c",
    "dataset_ethanol/test_dimers.xyz": "6beaf368c2caed6493a39c643438317246926675f14b188b7a2dcbd7868f7342",
    "dataset_ethanol/test_eth_meth.xyz": "e9109584eb66d2ffe7509dd792c436e4b54bed2583a4de555bda9b2cd4799adf",
    "dataset_ethanol/test_norm_mode_3005.xyz": "9412f0ac3562ee3f307e823eae5f6a9b793e1805feea908f58c9d24a0068f6b0",
    "dataset_ethanol/test_norm_mode_874.xyz": "13f363e0c141dc25af4d8f59668623a27e024c781a07a52f8565fc6bb0e58f99",
    "dataset_ethanol/train.xyz": "a26a16d8910581fa321fedc3bd3dfe31f2460e8cbfdc7a8f65243f4fd7250dd0",
    "dataset_ethanol/train_eth_meth.xyz": "2aea243261f05b7d556cca37d73de335a98573d198441f32dc6f835cd948e3a0",
    "rmd17-npz/rmd17_aspirin_test_01.npz": "a3c3b61e782d01e6dd649a126004903f7873e8e7ee5034135abfdb8873be711d",
    "rmd17-npz/rmd17_aspirin_test_02.npz": "445e26aa2253dcf7e8d9386785c4a9cea69f1e196f54fbd69a969c53177a1a9c",
    "rmd17-npz/rmd17_aspirin_test_03.npz": "818d5bbb8c8ff17bd049ab09e2614354b0a8a21a1cd5667bc13e934247162a36",
    "rmd17-npz/rmd17_aspirin_test_04.npz": "724b808f3ed9eb542b864e14982aa2246a4c5098165b86ec8b22e893cd9271c5",
    "rmd17-npz/rmd17_aspirin_test_05.npz": "03e1e6673698867c73e3be38a37a19b062ed49a4961aee21e67702db869f3d9d",
    "rmd17-npz/rmd17_aspirin_train_01.npz": "d460f0e43a1a9411b55cdcd9cdbeb9466ae62851ac91392516ab88e4ebc68143",
    "rmd17-npz/rmd17_aspirin_train_02.npz": "8a5699756e1a9c2bc30c22985cff03b45cb1eb36550941d742d8ce5abfac2d01",
    "rmd17-npz/rmd17_aspirin_train_03.npz": "9153827bb89e26d43e9e590d35d5572dd0b535a190a3486c320c75494aa94a7c",
    "rmd17-npz/rmd17_aspirin_train_04.npz": "c086ab96170e5bdc0363674d1e5d6ea9786a7a76fca286eb87f35850b5e21c13",
    "rmd17-npz/rmd17_aspirin_train_05.npz": "25cc9584b5cd79f63d56d051bab326e18077b3719f8f45807747fbfa6a55e7ed",
    "rmd17-npz/rmd17_azobenzene_test_01.npz": "e83c87fe541a95e7349684e47294821ada708a780b59c469d3792588213cfc05",
    "rmd17-npz/rmd17_azobenzene_test_02.npz": "d40465898d81b26acecd3cf87ace552f71e125321b6a7f1086a7d4b9840d2a8d",
    "rmd17-npz/rmd17_azobenzene_test_03.npz": "50b509d220d2b4ef9d2837d41a216f68145a7e8e432d94063ee4137b60b127fe",
    "rmd17-npz/rmd17_azobenzene_test_04.npz": "ebf2c9fd9005da1a1ca583e236bf212ccd97fdf6c628cb20730e437473efa523",
    "rmd17-npz/rmd17_azobenzene_test_05.npz": "b051536d5df3fd149eefbb8acef2a395288b30d4915d970271ee1384bb439abf",
    "rmd17-npz/rmd17_azobenzene_train_01.npz": "7a2ce543773f6cb7a2cccecbc37fd479781e27ec2d0bb4e5f9ecff8e404e5857",
    "rmd17-npz/rmd17_azobenzene_train_02.npz": "ecab4b730743f7c39ad244bc1295b5100871208c3ac549626752ac5275fc41e0",
    "rmd17-npz/rmd17_azobenzene_train_03.npz": "4ed337325ec4bbdaa3f28e675e78198d924e3c5d649b8641a9b52488f89682bc",
    "rmd17-npz/rmd17_azobenzene_train_04.npz": "4cad310d0063acb842163c1f9832d0732840ad66e3d67f10100919b2577a16c4",
    "rmd17-npz/rmd17_azobenzene_train_05.npz": "9fa7591791cde255c10e0668116dd2a914c80de9f5cb16d796139e7a7e7c54e3",
    "rmd17-npz/rmd17_benzene_test_01.npz": "4aad4aa2f5ae6aa78d2d9f5da7cb285c97864cfbdf054b67de12a1429b249534",
    "rmd17-npz/rmd17_benzene_test_02.npz": "a6e4243266892db8877157e9aeee04a685869aab22dfa9b2da34a4947cc2ddca",
    "rmd17-npz/rmd17_benzene_test_03.npz": "ca3f8d62e0b1bf9416dbcce4d8898adef4dd6251a820705c844d79cf6a670b1a",
    "rmd17-npz/rmd17_benzene_test_04.npz": "795ec0c6c6511fbc543653d58d6a2250dc18ef39a0bb06a3ca29dba307d90d10",
    "rmd17-npz/rmd17_benzene_test_05.npz": "9824b627d03ec61924f3df027d6eb37e4edbeb6eac6e9db08cc004acd4e2836a",
    "rmd17-npz/rmd17_benzene_train_01.npz": "6e69deb5dc8663c2d2461cc50e522c74742acea7b4185da348fc08585a15cdc7",
    "rmd17-npz/rmd17_benzene_train_02.npz": "baa8b8448dbe2f9e9bd5958de9f89f46a63c6504c0c0c24f0e4ac0c0e76524fc",
    "rmd17-npz/rmd17_benzene_train_03.npz": "dcff45304807aba6666afeae17fdbc2e6833e720b111fb01e42a71b06e6e50f6",
    "rmd17-npz/rmd17_benzene_train_04.npz": "0eb0b571ae4c8fcf7fac2f90ad0d2aaf0820d031ee191f5508172b2a8a43f731",
    "rmd17-npz/rmd17_benzene_train_05.npz": "3bb6c8bb7650cf4768e740d9839d01f2f162c0c3fc3223598aeb4fcbb6c8500a",
    "rmd17-npz/rmd17_ethanol_test_01.npz": "c3594a0f93d5992e02f9eb671392fb2e5021b3fa4f902417886966d1e4f64e1e",
    "rmd17-npz/rmd17_ethanol_test_02.npz": "b3276f23d28d4588d008e19ad68e784278caf58e90c7139a11cd7e950b8d3eb4",
    "rmd17-npz/rmd17_ethanol_test_03.npz": "1ba5586225c0439d5880c4b860e5a84dde042f947b90667178bb6f819241c284",
    "rmd17-npz/rmd17_ethanol_test_04.npz": "1ec462b9333e7984ac97fefe66294ca51cceb64c8e4afd24d9d8124b81fa6fb0",
    "rmd17-npz/rmd17_ethanol_test_05.npz": "af80798e2c0b309b8ad65a5c539651089c3d7f8d0528686c4a74e2132ecc9a1f",
    "rmd17-npz/rmd17_ethanol_train_01.npz": "096946747b8d9dcfa042b44f8debbd3da387dfe1586b659e3be789cc4927316a",
    "rmd17-npz/rmd17_ethanol_train_02.npz": "b4bd8ed96ffaa31fe50634ab8705684151011033c3dd73927d61931fc8fda863",
    "rmd17-npz/rmd17_ethanol_train_03.npz": "26a3a378a63486cb8b127f0f4a8af861996a1759d59e9457288cf11d86967cae",
    "rmd17-npz/rmd17_ethanol_train_04.npz": "14796fc0c778e089292e514aee2592b8c4395f7ce4648c8aa22e19030421d0da",
    "rmd17-npz/rmd17_ethanol_train_05.npz": "fa8b76b36482fff572fc01f62120403c7e6678f5d13f302362e4c9e1cd57a8a6",
    "rmd17-npz/rmd17_malonaldehyde_test_01.npz": "147404574d4fe3204dea7eb3799426d264e36b7900012f27fd2d26a26832fdaf",
    "rmd17-npz/rmd17_malonaldehyde_test_02.npz": "d0977dc7f47a25aee87d7deaccd90e81c20d20aff7f3ece37a7d526a540aa867",
    "rmd17-npz/rmd17_malonaldehyde_test_03.npz": "8426e80062701f13f304ece6512999bd2520b990eb5106eb68224a89f2f145f1",
    "rmd17-npz/rmd17_malonaldehyde_test_04.npz": "586cd71435f574eb470841b0567b2963d7883618d4cf45902ee04f27c176480a",
    "rmd17-npz/rmd17_malonaldehyde_test_05.npz": "99604748d2f2fe42984642daa882cde193902a610701fa67c724b5d6c082a10b",
    "rmd17-npz/rmd17_malonaldehyde_train_01.npz": "95723385cdfd7f8446a84cdff607f14901e4c2b3949db7a965147dc5098d8ee1",
    "rmd17-npz/rmd17_malonaldehyde_train_02.npz": "ff161de4f1dfa21f80b9225c8489dc2f267a5361ad39e59e20e898db09933786",
    "rmd17-npz/rmd17_malonaldehyde_train_03.npz": "c83c94ca912339763586ccd4220d48f61308e33975ee1ba06d0c12645ecf7975",
    "rmd17-npz/rmd17_malonaldehyde_train_04.npz": "347b7702c49da472e1d7f1cc052f2ce0e89524b14a4b6fca4813415bbab1e7e3",
    "rmd17-npz/rmd17_malonaldehyde_train_05.npz": "9a7055ba3cd97451f34fd9d6f8e818306860b7167f9efb80a14cd09605afdfea",
    "rmd17-npz/rmd17_naphthalene_test_01.npz": "80a19bca6aaa5cdf241007d6a7332e7b96a8e6ef362c1badcdb86a574ac3fe06",
    "rmd17-npz/rmd17_naphthalene_test_02.npz": "de682a3e54de5276bcb1f6970f1bcb82452754815d970c783fe089978c66bee6",
    "rmd17-npz/rmd17_naphthalene_test_03.npz": "3deb283fb3c46fca12fbff16ffc10b1d023a40c3e92d1c26796ecf516f2c817d",
    "rmd17-npz/rmd17_naphthalene_test_04.npz": "68b215a3e506dcfc48187e49c5f9bc3dafe2033123cd5a7dfd665f561fb9d729",
    "rmd17-npz/rmd17_naphthalene_test_05.npz": "f15dd32658f3a9cac8fff91443989ffbe9701dcf356528331770efd62efb487c",
    "rmd17-npz/rmd17_naphthalene_train_01.npz": "940f41110785fb0d3fa5feac68800cf4c68bd05fd55d563d3adacf5247d7688a",
    "rmd17-npz/rmd17_naphthalene_train_02.npz": "2b5dac7969803d83d9625979651c44d10368d65839781776095a5e4beeba46b7",
    "rmd17-npz/rmd17_naphthalene_train_03.npz": "afeeb82c0f220e6ab03d514895a0ae55ceb2373c0a9af2fb8cafa85ff2d900c8",
    "rmd17-npz/rmd17_naphthalene_train_04.npz": "696494def32844c8e6eb016395f50ceaa767e6a22f1688d4f3c6dc19cc83b192",
    "rmd17-npz/rmd17_naphthalene_train_05.npz": "cfbfbf744ff3c8d8411c8ee745841037a78da73ecf7a6a08675e66bd822178ca",
    "rmd17-npz/rmd17_paracetamol_test_01.npz": "99e09ff10b54c55830c011c0959b643bede0512a89ae5b5b9a11e8abea9b3eaa",
    "rmd17-npz/rmd17_paracetamol_test_02.npz": "9090bc53b4f7a72ebaaab1362f6311341d64f9c94469f4509137c288e8930fe3",
    "rmd17-npz/rmd17_paracetamol_test_03.npz": "30bae2bfdaa812622af510939d29867546345d8a3f02f87e0413dc4aed9b4b73",
    "rmd17-npz/rmd17_paracetamol_test_04.npz": "02c58f916ad306ba70cd7c2b144ff70a9c264d0aab129461d29782c0fc185a65",
    "rmd17-npz/rmd17_paracetamol_test_05.npz": "0f6565c5afccac589398af91fbfa8fd6a7d41e05f589e380ce4f62aee0fa5956",
    "rmd17-npz/rmd17_paracetamol_train_01.npz": "819513d42011a63773ff1baf61b06f9f0884370fbdb6539d6f11fc6cb580a0ba",
    "rmd17-npz/rmd17_paracetamol_train_02.npz": "c77e51f5101eec50d14deb7033cd0e7bfea858ddd61b37309702ade55ec3b1ff",
    "rmd17-npz/rmd17_paracetamol_train_03.npz": "37cbba249fdc3659a6abea36b86eb401965002a6bdd7ec6854149d100d7baa86",
    "rmd17-npz/rmd17_paracetamol_train_04.npz": "84a22e4017c0a10de4547aa8221e9a8f95130e0d67a7fd8f7e423d67f2bf37e7",
    "rmd17-npz/rmd17_paracetamol_train_05.npz": "7c41c3b0296b401e8dbbc15f561824231b0970af694ded27b0787ceab91b6e38",
    "rmd17-npz/rmd17_salicylic_test_01.npz": "4a03f66c719d7684f39620b2bae6842613482a86cdd4e6f95115ae4d37f03cc0",
    "rmd17-npz/rmd17_salicylic_test_02.npz": "8dd9e9c587155142287a8ad55db5d250e822fd98585eaff73aae888bbc6ce2bb",
    "rmd17-npz/rmd17_salicylic_test_03.npz": "989b3fbe6210d3e001a3aaeec6da2a067d512313f24c3839de0b7186cc47d3b3",
    "rmd17-npz/rmd17_salicylic_test_04.npz": "1e28d7ee84d1400b2212965b186148fa2533dd3d4a18c21e8c9d118300358079",
    "rmd17-npz/rmd17_salicylic_test_05.npz": "11e3d4b6df87efe483595bd5ffad0e6b1aa51fe77a57b95dd4567072df15af50",
    "rmd17-npz/rmd17_salicylic_train_01.npz": "9f96d79ec7a66dec666dbba60307c083ede80ecc919e0c9513ad9accfe43b5c0",
    "rmd17-npz/rmd17_salicylic_train_02.npz": "b18d19aacc1f74b50ae12e78971ac13606aa12391dbf2ba87e670aa73dbdff00",
    "rmd17-npz/rmd17_salicylic_train_03.npz": "94f086f1ceb4d9f20ca8468ef28174550c3b5231bb6df1e9517055effb247dab",
    "rmd17-npz/rmd17_salicylic_train_04.npz": "3c07d0e713f0bb9d622949f2d7b21c24e300b9cf72cd824b5d9d9c05ce13b728",
    "rmd17-npz/rmd17_salicylic_train_05.npz": "aee6021b51a60f85a71831255a008b60538adc412fb2e0c33f2c6657964013f0",
    "rmd17-npz/rmd17_toluene_test_01.npz": "8a658b9bf1b7a5c1abaa03846ee6302725e02bdcd2ab720ef94da0be55625faa",
    "rmd17-npz/rmd17_toluene_test_02.npz": "8b04b4bbdba25f45478b3db153814b0332de8bcc7c3e56c1265696597c0191e2",
    "rmd17-npz/rmd17_toluene_test_03.npz": "a0729092008a3322043b902bebddc6ba8f5593dc983bb7e11a344d299cde195f",
    "rmd17-npz/rmd17_toluene_test_04.npz": "5f6a91c6d0e3cd144e4480f35a5856f2be4e2554dbc3f9fd15406cbcfaf6d936",
    "rmd17-npz/rmd17_toluene_test_05.npz": "9f3bb3ca88e2afc147a8a80eb78d2cf9689027f7661127669062a3bf582284a4",
    "rmd17-npz/rmd17_toluene_train_01.npz": "24d0642f897a1da1fdc4dbdd0a9c2a7f6082dd88e02954b12896a45a7a5fbac7",
    "rmd17-npz/rmd17_toluene_train_02.npz": "57a2f44a931d6074363ea7826e22b0cc06e52e1af1bace98daaec10ca3ce1bd6",
    "rmd17-npz/rmd17_toluene_train_03.npz": "b261bd56df9a237036a76526524d689892aadf84964cdb4357a42fb303b6aec2",
    "rmd17-npz/rmd17_toluene_train_04.npz": "82befdd811ed4e0578db83e73fc09751b43c69865a073a2b487120dbf411e203",
    "rmd17-npz/rmd17_toluene_train_05.npz": "2e374903c51d17f3444539e5e75e0bd7ebd208065c27836d6aa201af3587a48d",
    "rmd17-npz/rmd17_uracil_test_01.npz": "ceda757f7670d97080ec3c28dfb559aeb8ca54f49e7f0da0682fa1eb5ac00907",
    "rmd17-npz/rmd17_uracil_test_02.npz": "8c789fd0085e8fda19a7a0d0482e6a2442b52a618c264ea1fdbeab90b08bb3a9",
    "rmd17-npz/rmd17_uracil_test_03.npz": "312adc559d50e8e156cb8f859d0d0dc69e3c879d7e0a09ed77763f0e6443330c",
    "rmd17-npz/rmd17_uracil_test_04.npz": "906548ac7b62eb6481485f12f47c04813f16ce9923abf4eb2fbde5b94dafadb9",
    "rmd17-npz/rmd17_uracil_test_05.npz": "0ef14e77a1bf81fde96cfeea847ca2b1d0dc60710717bef10efff7a4c90adf2d",
    "rmd17-npz/rmd17_uracil_train_01.npz": "e1d450430362e3bebdeea96b24501f5e56a5a8af1eb02d50cb763f48b51523cf",
    "rmd17-npz/rmd17_uracil_train_02.npz": "2781e0bcd4143cac577bc5094e3ef2f77b04434601409d72af15b3903e044ff3",
    "rmd17-npz/rmd17_uracil_train_03.npz": "bcaef0eb1ea6c4dbf3850806ef2a3ea3d468595b05a8fe67a58295b0a7951143",
    "rmd17-npz/rmd17_uracil_train_04.npz": "edaecc4f9f9250b10aa7b805c3b349c6fc4f26825968a2011546e2a840b4f1fe",
    "rmd17-npz/rmd17_uracil_train_05.npz": "d08ba73882849de5cbda50208365e8b2e57e5e83785334975af8d15fdc373f80",
}


@dataclass(frozen=True)
class PinnedFile:
    """One file of a pinned repository: ``relpath`` = ``<folder>/<file>``."""

    relpath: str
    sha256: str

    @property
    def repository(self) -> str:
        return REPOSITORIES[self.folder][0]

    @property
    def commit(self) -> str:
        return REPOSITORIES[self.folder][1]

    @property
    def folder(self) -> str:
        return self.relpath.split("/", 1)[0]

    @property
    def url(self) -> str:
        return f"https://raw.githubusercontent.com/{self.repository}/{self.commit}/{self.relpath}"

    @property
    def remote(self) -> RemoteFile:
        return RemoteFile(self.url, self.relpath, self.sha256)


PINNED: dict[str, PinnedFile] = {p: PinnedFile(p, s) for p, s in _SHA256.items()}


def pinned_file(relpath: str) -> PinnedFile:
    """The pinned file ``<folder>/<file>``; KeyError listing the folders otherwise."""
    if relpath not in PINNED:
        raise KeyError(f"{relpath!r} is not a pinned benchmark file; known folders: "
                       f"{', '.join(REPOSITORIES)} (see fusion.data.sources)")
    return PINNED[relpath]


def pinned_path(relpath: str, cache_dir: str | os.PathLike = "resources") -> Path:
    """Where the pinned file lives in the cache: ``<cache_dir>/downloads/<folder>/<file>``."""
    return download_dir(cache_dir) / pinned_file(relpath).relpath


def fetch_pinned(relpath: str, cache_dir: str | os.PathLike = "resources", opener=None,
                 log: Callable[[str], None] = print) -> Path:
    """The checked file in the cache, downloaded from its pinned commit if missing.

    Without network the error names the URL, the place to put the file and its sha256;
    ``fusion data import DIR`` places a whole clone of the repository at once.
    """
    return fetch(pinned_file(relpath).remote, cache_dir, opener=opener, log=log)


@dataclass
class ImportReport:
    """What :func:`import_files` did: relpaths copied, already present, refused (with the
    reason), and files of ``DIR`` that are not pinned benchmark files (ignored)."""

    copied: list[str]
    present: list[str]
    refused: dict[str, str]
    ignored: list[str]

    def lines(self) -> list[str]:
        out = [f"imported {p}" for p in self.copied]
        out += [f"already in place {p}" for p in self.present]
        out += [f"REFUSED {p}: {why}" for p, why in self.refused.items()]
        if self.ignored:
            out.append(f"ignored {len(self.ignored)} file(s) that are not pinned benchmark "
                       f"files (e.g. {self.ignored[0]})")
        return out


def _candidates(source: Path) -> Iterable[tuple[str, Path]]:
    """``(<folder>/<file>, path)`` for every regular file under ``source`` (any depth)."""
    for path in sorted(source.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield f"{path.parent.name}/{path.name}", path


def _copy_atomic(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def import_files(source: str | os.PathLike, cache_dir: str | os.PathLike = "resources",
                 log: Callable[[str], None] = print) -> ImportReport:
    """Copy the pinned benchmark files found under ``source`` into the cache, checked.

    ``source`` is a folder holding (at any depth) ``<folder>/<file>`` as in the repositories,
    e.g. a clone of andersx/rmd17-npz or davkovacs/BOTNet-datasets. Each file is hashed
    before it is copied: a mismatch is refused (both hashes named) and the cache keeps what
    it had. A file already in the cache with the right hash is left alone. Raises
    ``FileNotFoundError`` when ``source`` is not a folder and ``ValueError`` when it holds
    no pinned file at all.
    """
    source = Path(source).expanduser()
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: not a folder; expected a folder holding e.g. "
                                "rmd17-npz/rmd17_aspirin_train_01.npz or "
                                "dataset_acac/train_300K.xyz")
    report = ImportReport([], [], {}, [])
    for relpath, path in _candidates(source):
        if relpath not in PINNED:
            report.ignored.append(str(path))
            continue
        pinned = PINNED[relpath]
        actual = sha256_of(path)
        if actual != pinned.sha256:
            report.refused[relpath] = (f"{path} has sha256 {actual}, expected {pinned.sha256} "
                                       f"({pinned.repository}@{pinned.commit[:7]}); the file "
                                       "is truncated, modified or from another version; the "
                                       "cache was not changed")
            continue
        dest = download_dir(cache_dir) / relpath
        if dest.is_file() and sha256_of(dest) == pinned.sha256:
            report.present.append(relpath)
            continue
        _copy_atomic(path, dest)
        report.copied.append(relpath)
    if not (report.copied or report.present or report.refused):
        raise ValueError(f"{source}: no pinned benchmark file found (looked for "
                         f"<folder>/<file> with folder in {', '.join(REPOSITORIES)})")
    for line in report.lines():
        log(line)
    return report

